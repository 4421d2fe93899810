-- Streamed ingestion: a run commits page by page, with the room's pagination positions, and
-- resumes where it stopped. backfill_token is where older history continues (dir=b);
-- history_complete says the start of the room was reached.
ALTER TABLE rooms ADD COLUMN backfill_token TEXT CHECK (length(backfill_token) <= 4096);
ALTER TABLE rooms ADD COLUMN history_complete BOOLEAN NOT NULL DEFAULT FALSE;

-- The runs under way: one row from a run's start to its audit record, so that a run whose
-- process died (its lease expired) is still audited, with what its committed pages stored.
CREATE TABLE ingestion_runs (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id         TEXT    NOT NULL CHECK (length(org_id) BETWEEN 1 AND 64),
    actor          TEXT    NOT NULL CHECK (length(actor) BETWEEN 1 AND 255),
    room_id        TEXT    NOT NULL CHECK (length(room_id) BETWEEN 2 AND 255),
    homeserver_url TEXT    NOT NULL CHECK (length(homeserver_url) <= 2048),
    classification SMALLINT NOT NULL CHECK (classification BETWEEN 0 AND 4),
    started_at     BIGINT  NOT NULL,
    lease_until    BIGINT  NOT NULL,
    message_count  BIGINT  NOT NULL DEFAULT 0 CHECK (message_count >= 0),
    scheduled      BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX ingestion_runs_lease ON ingestion_runs (lease_until);
