-- Rooms, messages, the audit trail and the fusion outbox. Every tenant-owned table carries
-- org_id and every uniqueness rule includes it: a global key would leak existence across tenants.
-- Timestamps are UTC milliseconds, classifications are ranks 0..=4.

CREATE TABLE rooms (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id           TEXT    NOT NULL CHECK (length(org_id) BETWEEN 1 AND 64),
    room_id          TEXT    NOT NULL CHECK (length(room_id) BETWEEN 2 AND 255),
    homeserver_url   TEXT    NOT NULL CHECK (length(homeserver_url) <= 2048),
    name             TEXT             CHECK (length(name) <= 4096),
    topic            TEXT             CHECK (length(topic) <= 65536),
    canonical_alias  TEXT             CHECK (length(canonical_alias) <= 255),
    member_count     BIGINT  NOT NULL CHECK (member_count >= 0),
    encrypted        BOOLEAN NOT NULL,
    classification   SMALLINT NOT NULL CHECK (classification BETWEEN 0 AND 4),
    first_seen_at    BIGINT  NOT NULL,
    last_ingested_at BIGINT  NOT NULL,
    resume_token     TEXT             CHECK (length(resume_token) <= 4096),
    UNIQUE (org_id, room_id)
);
CREATE INDEX rooms_org_classification ON rooms (org_id, classification);

CREATE TABLE messages (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id         TEXT    NOT NULL,
    room_pk        BIGINT  NOT NULL REFERENCES rooms (id),
    event_id       TEXT    NOT NULL CHECK (length(event_id) BETWEEN 2 AND 255),
    sender         TEXT    NOT NULL CHECK (length(sender) BETWEEN 2 AND 255),
    msgtype        TEXT             CHECK (length(msgtype) <= 255),
    body           TEXT             CHECK (length(body) <= 65536),
    sent_at        BIGINT  NOT NULL,
    edited         BOOLEAN NOT NULL,
    edited_at      BIGINT,
    redacted       BOOLEAN NOT NULL,
    encrypted      BOOLEAN NOT NULL,
    reply_to       TEXT             CHECK (length(reply_to) <= 255),
    thread_root    TEXT             CHECK (length(thread_root) <= 255),
    media          TEXT             CHECK (length(media) <= 4096),
    classification SMALLINT NOT NULL CHECK (classification BETWEEN 0 AND 4),
    UNIQUE (org_id, event_id)
);
-- One index serves a room's messages in time order (keyset on sent_at, id) and, covering the
-- classification, the per-room counts and newest message time over a clearance.
CREATE INDEX messages_room_time ON messages (org_id, room_pk, sent_at, id, classification);

CREATE TABLE ingestions (
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
    UNIQUE (org_id, seq)
);

CREATE TRIGGER ingestions_no_update BEFORE UPDATE ON ingestions
BEGIN
    SELECT RAISE(ABORT, 'the audit trail is append-only');
END;
CREATE TRIGGER ingestions_no_delete BEFORE DELETE ON ingestions
BEGIN
    SELECT RAISE(ABORT, 'the audit trail is append-only');
END;

CREATE TABLE outbox (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id       TEXT    NOT NULL,
    room_id      TEXT    NOT NULL,
    version      BIGINT  NOT NULL,
    payload      TEXT    NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT,
    created_at   BIGINT  NOT NULL,
    delivered_at BIGINT,
    parked_at    BIGINT,
    UNIQUE (org_id, version)
);
CREATE INDEX outbox_pending ON outbox (delivered_at, parked_at, id);
