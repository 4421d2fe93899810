-- The transparency log: one RFC 9162 Merkle log per organisation. Each entry keeps its exact
-- leaf bytes (the canonical JSON of an audit record, a read of content or a held file), with
-- the columns the access journal is filtered and gated on; entries are indexed from 0 without
-- gaps. The hashes of every complete subtree (tlog stored-hash indexes) are kept beside them, so
-- that a root or a proof reads O(log n) rows in one statement. Append-only, like the audit trail.
CREATE TABLE log_entries (
    -- Without AUTOINCREMENT (no sequence row written per entry): rows are never deleted, so
    -- ids are never reused.
    id             INTEGER  PRIMARY KEY,
    org_id         TEXT     NOT NULL CHECK (length(org_id) BETWEEN 1 AND 64),
    idx            BIGINT   NOT NULL CHECK (idx >= 0),
    kind           TEXT     NOT NULL CHECK (kind IN ('AUDIT', 'ACCESS', 'ATTACHMENT')),
    leaf           TEXT     NOT NULL,
    classification SMALLINT NOT NULL CHECK (classification BETWEEN 0 AND 4),
    at             BIGINT   NOT NULL,
    actor          TEXT              CHECK (length(actor) <= 255),
    action         TEXT              CHECK (length(action) <= 32),
    query          TEXT,
    item_count     BIGINT            CHECK (item_count >= 0),
    -- An AUDIT entry's position in the organisation's hash chain.
    seq            BIGINT            CHECK (seq >= 1),
    -- An ATTACHMENT entry's message.
    event_id       TEXT              CHECK (length(event_id) <= 255),
    UNIQUE (org_id, idx)
);
-- Only AUDIT entries have a chain position: the others touch no index but (org_id, idx), which
-- also serves the access journal's list (newest first, by index).
CREATE UNIQUE INDEX log_entries_seq ON log_entries (org_id, seq) WHERE seq IS NOT NULL;
CREATE INDEX log_entries_event ON log_entries (org_id, event_id) WHERE event_id IS NOT NULL;
-- The rooms an ACCESS entry read.
CREATE TABLE log_entry_rooms (
    org_id  TEXT   NOT NULL,
    idx     BIGINT NOT NULL,
    room_id TEXT   NOT NULL CHECK (length(room_id) <= 255),
    PRIMARY KEY (org_id, room_id, idx)
) WITHOUT ROWID;
CREATE TABLE log_hashes (
    org_id     TEXT   NOT NULL,
    hash_index BIGINT NOT NULL CHECK (hash_index >= 0),
    hash       TEXT   NOT NULL CHECK (length(hash) = 64),
    PRIMARY KEY (org_id, hash_index)
) WITHOUT ROWID;
-- The versions each run stored, in order: the leaves of its audit record's eventsRoot. A
-- version is found again by its message, version row or redaction row.
CREATE TABLE run_versions (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id       TEXT    NOT NULL,
    run_id       BIGINT  NOT NULL,
    idx          BIGINT  NOT NULL CHECK (idx >= 0),
    message_pk   BIGINT  NOT NULL,
    kind         TEXT    NOT NULL CHECK (kind IN ('ORIGINAL', 'EDIT', 'REDACTION')),
    version_pk   BIGINT,
    redaction_pk BIGINT,
    leaf_hash    TEXT    NOT NULL CHECK (length(leaf_hash) = 64),
    UNIQUE (run_id, idx)
);
CREATE INDEX run_versions_message ON run_versions (org_id, message_pk);
-- A run's audit record names its run and the root over the versions it stored.
ALTER TABLE ingestions ADD COLUMN run_id BIGINT;
ALTER TABLE ingestions ADD COLUMN events_root TEXT CHECK (length(events_root) = 64);
ALTER TABLE ingestions ADD COLUMN events_count BIGINT CHECK (events_count >= 0);
CREATE INDEX ingestions_run ON ingestions (org_id, run_id) WHERE run_id IS NOT NULL;

CREATE TRIGGER log_entries_no_update BEFORE UPDATE ON log_entries
BEGIN
    SELECT RAISE(ABORT, 'the transparency log is append-only');
END;
CREATE TRIGGER log_entries_no_delete BEFORE DELETE ON log_entries
BEGIN
    SELECT RAISE(ABORT, 'the transparency log is append-only');
END;
CREATE TRIGGER log_entry_rooms_no_update BEFORE UPDATE ON log_entry_rooms
BEGIN
    SELECT RAISE(ABORT, 'the transparency log is append-only');
END;
CREATE TRIGGER log_entry_rooms_no_delete BEFORE DELETE ON log_entry_rooms
BEGIN
    SELECT RAISE(ABORT, 'the transparency log is append-only');
END;
CREATE TRIGGER log_hashes_no_update BEFORE UPDATE ON log_hashes
BEGIN
    SELECT RAISE(ABORT, 'the transparency log is append-only');
END;
CREATE TRIGGER log_hashes_no_delete BEFORE DELETE ON log_hashes
BEGIN
    SELECT RAISE(ABORT, 'the transparency log is append-only');
END;
CREATE TRIGGER run_versions_no_update BEFORE UPDATE ON run_versions
BEGIN
    SELECT RAISE(ABORT, 'the transparency log is append-only');
END;
CREATE TRIGGER run_versions_no_delete BEFORE DELETE ON run_versions
BEGIN
    SELECT RAISE(ABORT, 'the transparency log is append-only');
END;
