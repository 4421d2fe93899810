-- Full-text search over the current text of messages: a tsvector of the body in French (stems,
-- stop words) with accents and case folded (unaccent before the stemmer), kept by the database
-- itself as a generated column, so in the same transaction as the message. A message is
-- indexed while it has a body and is not redacted (an encrypted message without its key has
-- no body); an edit replaces the indexed text, a redaction takes it out. Versions of edited
-- messages are evidence, not indexed.
CREATE EXTENSION IF NOT EXISTS unaccent;
CREATE TEXT SEARCH CONFIGURATION argus_french (COPY = pg_catalog.french);
ALTER TEXT SEARCH CONFIGURATION argus_french
    ALTER MAPPING FOR hword, hword_part, word WITH unaccent, french_stem;

ALTER TABLE messages ADD COLUMN search tsvector GENERATED ALWAYS AS (
    CASE WHEN redacted OR body IS NULL THEN NULL ELSE to_tsvector('argus_french'::regconfig, body) END
) STORED;
-- A pending list four times the default: an ingestion's new entries are merged into the index in
-- fewer, larger passes (measured in docs/benchmarks.md); autovacuum merges the rest.
CREATE INDEX messages_search ON messages USING gin (search) WITH (gin_pending_list_limit = 16384);
