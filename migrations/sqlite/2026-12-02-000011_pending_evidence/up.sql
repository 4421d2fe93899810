-- Edits and redactions whose original is not stored yet: a backwards read meets them before
-- their original (newest first), and a run may stop (its cap, a crash) before it reaches it.
-- They are kept here, with the batch that brought them, and applied, under the same rules, by
-- the batch that stores their original.
CREATE TABLE pending_edits (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id    TEXT    NOT NULL,
    room_pk   BIGINT  NOT NULL REFERENCES rooms (id),
    target    TEXT    NOT NULL CHECK (length(target) BETWEEN 2 AND 255),
    event_id  TEXT    NOT NULL CHECK (length(event_id) BETWEEN 2 AND 255),
    sender    TEXT    NOT NULL CHECK (length(sender) BETWEEN 2 AND 255),
    sent_at   BIGINT  NOT NULL,
    msgtype   TEXT             CHECK (length(msgtype) <= 255),
    body      TEXT             CHECK (length(body) <= 65536),
    UNIQUE (org_id, room_pk, event_id)
);
CREATE INDEX pending_edits_target ON pending_edits (org_id, room_pk, target);

CREATE TABLE pending_redactions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id      TEXT    NOT NULL,
    room_pk     BIGINT  NOT NULL REFERENCES rooms (id),
    target      TEXT    NOT NULL CHECK (length(target) BETWEEN 2 AND 255),
    redacted_by TEXT    NOT NULL CHECK (length(redacted_by) BETWEEN 2 AND 255),
    redacted_at BIGINT  NOT NULL,
    reason      TEXT             CHECK (length(reason) <= 1024),
    confirmed   BOOLEAN NOT NULL,
    UNIQUE (org_id, room_pk, target)
);
