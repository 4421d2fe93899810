-- The search vector stops being a generated column: the store hands it in with each new row,
-- computed one chunk ahead on a second connection (another database process), and the triggers
-- below compute it in every other case. Either way it is `argus_search_vector(body, redacted)`,
-- written in the row's own transaction; the index and the queries are unchanged.
ALTER TABLE messages ALTER COLUMN search DROP EXPRESSION;

-- What a message is indexed as: its current text in French, accents and case folded; nothing
-- while it is redacted or has no body (an encrypted message without its key).
CREATE FUNCTION argus_search_vector(body text, redacted boolean) RETURNS tsvector
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT CASE WHEN redacted OR body IS NULL THEN NULL ELSE to_tsvector('argus_french'::regconfig, body) END $$;

CREATE FUNCTION argus_messages_search() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    NEW.search := argus_search_vector(NEW.body, NEW.redacted);
    RETURN NEW;
END
$$;

-- A new row without its vector gets one; a row with a vector but nothing to index loses it.
CREATE TRIGGER messages_search_insert BEFORE INSERT ON messages FOR EACH ROW
    WHEN ((NEW.search IS NULL) IS DISTINCT FROM (NEW.redacted OR NEW.body IS NULL))
    EXECUTE FUNCTION argus_messages_search();

-- An edit, a redaction or a late decryption re-indexes the row, and no update can set a vector
-- of its own: it is computed again from the body.
CREATE TRIGGER messages_search_update BEFORE UPDATE ON messages FOR EACH ROW
    WHEN (NEW.body IS DISTINCT FROM OLD.body OR NEW.redacted IS DISTINCT FROM OLD.redacted
          OR NEW.search IS DISTINCT FROM OLD.search)
    EXECUTE FUNCTION argus_messages_search();
