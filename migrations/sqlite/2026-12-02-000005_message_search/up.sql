-- Full-text search over the current text of messages: an FTS5 index with external content (the
-- text lives once, in messages), folding case and accents. It is kept in the same transaction
-- as the messages: the store's write path indexes the messages an ingestion inserts with one
-- statement at its end (a per-row insert trigger was measured six times slower), and the
-- triggers below follow every later change. A message is indexed while it has a body and is
-- not redacted (an encrypted message without its key has no body); its edit replaces the
-- indexed text, and a redaction takes it out. Versions of edited messages are evidence, not
-- indexed.
CREATE VIRTUAL TABLE messages_fts USING fts5(
    body,
    content = 'messages',
    content_rowid = 'id',
    tokenize = 'unicode61 remove_diacritics 2'
);

CREATE TRIGGER messages_fts_update AFTER UPDATE OF body, redacted ON messages
BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, body)
        SELECT 'delete', old.id, old.body WHERE old.body IS NOT NULL AND NOT old.redacted;
    INSERT INTO messages_fts (rowid, body)
        SELECT new.id, new.body WHERE new.body IS NOT NULL AND NOT new.redacted;
END;

CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages
WHEN old.body IS NOT NULL AND NOT old.redacted
BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, body) VALUES ('delete', old.id, old.body);
END;

INSERT INTO messages_fts (rowid, body) SELECT id, body FROM messages WHERE body IS NOT NULL AND NOT redacted;
