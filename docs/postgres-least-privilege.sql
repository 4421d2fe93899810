-- Least-privilege PostgreSQL for the Argus Tchap server.
--
-- The tables belong to the role that runs the migrations (`argus-tchap migrate`, or the first
-- start with that role). The server itself connects as `argus_app`: it reads and writes rooms,
-- messages and the outbox, but may only SELECT and INSERT audit records. It does not own any
-- table, so it cannot drop or disable the triggers that refuse UPDATE, DELETE and TRUNCATE on
-- the audit trail, nor rewrite the trail. Run this as the owner, after the migrations, in the
-- server's database; give `argus_app` a password (or certificate) of its own.
--
-- The store test suite runs this very file (`crates/argus-store/tests/it/audit.rs`).

DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'argus_app') THEN
        CREATE ROLE argus_app LOGIN;
    END IF;
END $$;

REVOKE ALL ON ALL TABLES IN SCHEMA public FROM argus_app;
GRANT USAGE ON SCHEMA public TO argus_app;
GRANT SELECT, INSERT, UPDATE, DELETE
    ON rooms, messages, message_counts, message_versions, message_redactions, version_redactions, outbox,
       ingestion_runs, watches, account_credentials, account_watches, account_watch_rooms, pending_edits,
       pending_redactions, attachments, media_blobs, e2ee_devices, e2ee_device_items
    TO argus_app;
GRANT SELECT, INSERT ON ingestions TO argus_app;
-- The transparency log, like the audit trail: appended to, never rewritten.
GRANT SELECT, INSERT ON log_entries, log_entry_rooms, log_hashes, run_versions TO argus_app;
-- The history of rooms' state: appended to, never rewritten.
GRANT SELECT, INSERT ON room_states TO argus_app;
-- The migration bookkeeping: read only (the server applies no migration as this role).
GRANT SELECT ON __diesel_schema_migrations TO argus_app;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO argus_app;
