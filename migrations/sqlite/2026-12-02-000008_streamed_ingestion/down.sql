DROP TABLE ingestion_runs;
ALTER TABLE rooms DROP COLUMN history_complete;
ALTER TABLE rooms DROP COLUMN backfill_token;
