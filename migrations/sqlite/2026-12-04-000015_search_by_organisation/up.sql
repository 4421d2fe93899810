-- The full-text index holds each message's organisation beside its text: a second column, `org`,
-- with one token, 'o' and the organisation id in hexadecimal (one token whatever characters the
-- id has). Every search requires the caller's token there (`org : "o…" AND body : (…)`), so
-- FTS5 skips another organisation's matches inside the index instead of handing them to the
-- gate: what other organisations wrote no longer costs a search time that grows with it. The
-- search text is confined to `body` and always quoted, so no query reaches `org`.
--
-- Skipping a run of another organisation's matches walks at most the index leaf it lands in
-- (or a short match list whole): leaves of 1,000 bytes (16,000 before, 4,050 by FTS5's
-- default) keep that walk short; merges stay eight segments at a time.
--
-- The index reads its content through `messages_fts_content`: what it holds of each indexed
-- message (those with a body, not redacted). The write path adds new messages from it with one
-- statement; the triggers below follow every later change.
CREATE VIEW messages_fts_content AS
    SELECT id, body, 'o' || lower(hex(org_id)) AS org FROM messages WHERE body IS NOT NULL AND NOT redacted;

DROP TABLE messages_fts;
CREATE VIRTUAL TABLE messages_fts USING fts5(
    body,
    org,
    content = 'messages_fts_content',
    content_rowid = 'id',
    tokenize = 'unicode61 remove_diacritics 2',
    columnsize = 0
);
INSERT INTO messages_fts (messages_fts, rank) VALUES ('pgsz', 1000);
INSERT INTO messages_fts (messages_fts, rank) VALUES ('automerge', 8);
INSERT INTO messages_fts (messages_fts) VALUES ('rebuild');

DROP TRIGGER messages_fts_update;
CREATE TRIGGER messages_fts_update AFTER UPDATE OF body, redacted ON messages
BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, body, org)
        SELECT 'delete', old.id, old.body, 'o' || lower(hex(old.org_id)) WHERE old.body IS NOT NULL AND NOT old.redacted;
    INSERT INTO messages_fts (rowid, body, org) SELECT id, body, org FROM messages_fts_content WHERE id = new.id;
END;

DROP TRIGGER messages_fts_delete;
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages
WHEN old.body IS NOT NULL AND NOT old.redacted
BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, body, org) VALUES ('delete', old.id, old.body, 'o' || lower(hex(old.org_id)));
END;
