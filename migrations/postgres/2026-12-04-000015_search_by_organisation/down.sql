DROP INDEX messages_search;
CREATE INDEX messages_search ON messages USING gin (search) WITH (gin_pending_list_limit = 16384);
-- The up step created btree_gin when it was missing; a database that had it before loses it here.
DROP EXTENSION IF EXISTS btree_gin;
