-- A room answers to the homeserver it was archived from; an operator may move it to another
-- (`argus-tchap rooms rehome`), and the audit trail keeps that as a REHOME record naming the
-- homeserver it answered to until then. SQLite cannot widen a CHECK constraint in place: the
-- trail is copied as it is (ids, sequence, hashes) into a table that allows the new action,
-- and its append-only triggers are put back. No record is rewritten: links stay as hashed.
CREATE TABLE ingestions_rehome (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id         TEXT    NOT NULL,
    seq            BIGINT  NOT NULL CHECK (seq >= 1),
    actor          TEXT    NOT NULL,
    room_id        TEXT    NOT NULL,
    homeserver_url TEXT    NOT NULL,
    message_count  BIGINT  NOT NULL,
    classification SMALLINT NOT NULL CHECK (classification BETWEEN 0 AND 4),
    started_at     BIGINT  NOT NULL,
    finished_at    BIGINT,
    outcome        TEXT    NOT NULL CHECK (outcome IN ('SUCCEEDED', 'FAILED')),
    error          TEXT,
    prev_hash      TEXT    NOT NULL CHECK (length(prev_hash) = 64),
    hash           TEXT    NOT NULL CHECK (length(hash) = 64),
    action         TEXT    NOT NULL DEFAULT 'INGEST' CHECK (action IN ('INGEST', 'POST', 'REHOME')),
    event_id       TEXT    CHECK (length(event_id) BETWEEN 2 AND 255),
    body_sha256    TEXT    CHECK (length(body_sha256) = 64),
    body_length    BIGINT  CHECK (body_length >= 0),
    scheduled      BOOLEAN NOT NULL DEFAULT FALSE,
    previous_homeserver_url TEXT CHECK (length(previous_homeserver_url) BETWEEN 1 AND 2048),
    UNIQUE (org_id, seq),
    CHECK ((action = 'REHOME') = (previous_homeserver_url IS NOT NULL))
);
INSERT INTO ingestions_rehome (
    id, org_id, seq, actor, room_id, homeserver_url, message_count, classification, started_at,
    finished_at, outcome, error, prev_hash, hash, action, event_id, body_sha256, body_length, scheduled
)
SELECT
    id, org_id, seq, actor, room_id, homeserver_url, message_count, classification, started_at,
    finished_at, outcome, error, prev_hash, hash, action, event_id, body_sha256, body_length, scheduled
FROM ingestions ORDER BY id;
DROP TABLE ingestions;
ALTER TABLE ingestions_rehome RENAME TO ingestions;
CREATE TRIGGER ingestions_no_update BEFORE UPDATE ON ingestions
BEGIN
    SELECT RAISE(ABORT, 'the audit trail is append-only');
END;
CREATE TRIGGER ingestions_no_delete BEFORE DELETE ON ingestions
BEGIN
    SELECT RAISE(ABORT, 'the audit trail is append-only');
END;
