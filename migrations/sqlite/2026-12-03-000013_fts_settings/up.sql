-- The full-text index stops keeping each message's length in tokens (FTS5's docsize table):
-- only bm25() reads it, and search ranks a message by its own text, never with bm25()
-- (docs/ARCHITECTURE.md). One b-tree insert fewer per indexed message. Its segments are written
-- in leaves of up to 16,000 bytes (4,050 by default) and merged eight at a time (four by
-- default): a streamed ingestion commits a segment per batch, and these cut what each costs
-- (docs/benchmarks.md, "Search"). The index is rebuilt from the messages it held: those with
-- a body, not redacted.
DROP TABLE messages_fts;
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
