-- Evidence of edits and redactions. Every version of an edited message is kept (the original
-- as sent, then each edit that its own sender made), instead of the latest overwriting the
-- others; a redaction keeps who made it, when and why. Versions carry org_id like every
-- tenant-owned table and are unique per (organisation, event id): re-ingestion never
-- duplicates one. Versions and redactions are read only through their message, behind the
-- message's gate.
CREATE TABLE message_versions (
    id          BIGSERIAL PRIMARY KEY,
    org_id      TEXT    NOT NULL,
    message_pk  BIGINT  NOT NULL REFERENCES messages (id),
    event_id    TEXT    NOT NULL CHECK (length(event_id) BETWEEN 2 AND 255),
    sender      TEXT    NOT NULL CHECK (length(sender) BETWEEN 2 AND 255),
    sent_at     BIGINT  NOT NULL,
    msgtype     TEXT             CHECK (length(msgtype) <= 255),
    body        TEXT             CHECK (length(body) <= 65536),
    UNIQUE (org_id, event_id)
);
CREATE INDEX message_versions_message ON message_versions (org_id, message_pk, sent_at, id);

CREATE TABLE message_redactions (
    id           BIGSERIAL PRIMARY KEY,
    org_id       TEXT    NOT NULL,
    message_pk   BIGINT  NOT NULL REFERENCES messages (id),
    redacted_by  TEXT    NOT NULL CHECK (length(redacted_by) BETWEEN 2 AND 255),
    redacted_at  BIGINT  NOT NULL,
    reason       TEXT             CHECK (length(reason) <= 1024),
    UNIQUE (org_id, message_pk)
);
