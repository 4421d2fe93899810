-- The search index holds each message's organisation beside its vector (btree_gin's operator
-- class for text; a trusted extension since PostgreSQL 13, so the role that owns the schema may
-- create it). Every search names the caller's organisation (the gate's `org_id = …`), and the
-- index intersects the two inside itself: another organisation's matches are skipped there
-- instead of being fetched for the gate to drop, so a term other organisations wrote no
-- longer costs a time that grows with their matches. Same name and settings as before (the ingestion's helper merges its
-- pending list by name).
CREATE EXTENSION IF NOT EXISTS btree_gin;
DROP INDEX messages_search;
CREATE INDEX messages_search ON messages USING gin (org_id, search) WITH (gin_pending_list_limit = 16384);
