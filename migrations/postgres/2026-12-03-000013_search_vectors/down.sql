DROP TRIGGER messages_search_update ON messages;
DROP TRIGGER messages_search_insert ON messages;
DROP FUNCTION argus_messages_search();
DROP FUNCTION argus_search_vector(text, boolean);
DROP INDEX messages_search;
ALTER TABLE messages DROP COLUMN search;
ALTER TABLE messages ADD COLUMN search tsvector GENERATED ALWAYS AS (
    CASE WHEN redacted OR body IS NULL THEN NULL ELSE to_tsvector('argus_french'::regconfig, body) END
) STORED;
CREATE INDEX messages_search ON messages USING gin (search) WITH (gin_pending_list_limit = 16384);
