DROP INDEX ingestions_run;
ALTER TABLE ingestions DROP COLUMN events_count;
ALTER TABLE ingestions DROP COLUMN events_root;
ALTER TABLE ingestions DROP COLUMN run_id;
DROP TABLE run_versions;
DROP TABLE log_hashes;
DROP TABLE log_entry_rooms;
DROP TABLE log_entries;
DROP FUNCTION transparency_log_append_only();
