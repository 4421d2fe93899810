-- A version recorded without content (a message stored while still encrypted): it is rebuilt
-- with no body, message type or attachment, whatever the row holds once decrypted.
ALTER TABLE run_versions ADD COLUMN without_content BOOLEAN NOT NULL DEFAULT FALSE;
-- Redactions of edits kept as versions: who withdrew the edit, when and why (the first known).
CREATE TABLE version_redactions (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id       TEXT    NOT NULL,
    message_pk   BIGINT  NOT NULL REFERENCES messages (id),
    version_pk   BIGINT  NOT NULL REFERENCES message_versions (id),
    redacted_by  TEXT    NOT NULL CHECK (length(redacted_by) BETWEEN 2 AND 255),
    redacted_at  BIGINT  NOT NULL,
    reason       TEXT             CHECK (length(reason) <= 1024),
    UNIQUE (org_id, version_pk)
);
CREATE INDEX version_redactions_message ON version_redactions (org_id, message_pk);
