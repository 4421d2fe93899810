DROP TRIGGER messages_fts_delete;
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages
WHEN old.body IS NOT NULL AND NOT old.redacted
BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, body) VALUES ('delete', old.id, old.body);
END;

DROP TRIGGER messages_fts_update;
CREATE TRIGGER messages_fts_update AFTER UPDATE OF body, redacted ON messages
BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, body)
        SELECT 'delete', old.id, old.body WHERE old.body IS NOT NULL AND NOT old.redacted;
    INSERT INTO messages_fts (rowid, body)
        SELECT new.id, new.body WHERE new.body IS NOT NULL AND NOT new.redacted;
END;

DROP TABLE messages_fts;
DROP VIEW messages_fts_content;
CREATE VIRTUAL TABLE messages_fts USING fts5(
    body,
    content = 'messages',
    content_rowid = 'id',
    tokenize = 'unicode61 remove_diacritics 2',
    columnsize = 0
);
INSERT INTO messages_fts (messages_fts, rank) VALUES ('pgsz', 16000);
INSERT INTO messages_fts (messages_fts, rank) VALUES ('automerge', 8);
INSERT INTO messages_fts (rowid, body) SELECT id, body FROM messages WHERE body IS NOT NULL AND NOT redacted;
