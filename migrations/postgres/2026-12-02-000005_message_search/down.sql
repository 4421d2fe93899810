DROP INDEX messages_search;
ALTER TABLE messages DROP COLUMN search;
DROP TEXT SEARCH CONFIGURATION argus_french;
