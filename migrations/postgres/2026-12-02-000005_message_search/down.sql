DROP INDEX messages_search;
ALTER TABLE messages DROP COLUMN search;
DROP TEXT SEARCH CONFIGURATION argus_french;
-- The up step created unaccent when it was missing; a database that had it before loses it here.
DROP EXTENSION IF EXISTS unaccent;
