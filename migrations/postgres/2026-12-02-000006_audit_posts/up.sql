-- Notes posted into Tchap rooms are audited in the same hash chain as ingestions. A record
-- says which it is; a post keeps the event id the homeserver gave it, and the SHA-256 and
-- length of the body as sent, never the body. Adding columns rewrites no record: the chain's
-- existing links stay as they were hashed.
ALTER TABLE ingestions ADD COLUMN action TEXT NOT NULL DEFAULT 'INGEST' CHECK (action IN ('INGEST', 'POST'));
ALTER TABLE ingestions ADD COLUMN event_id TEXT CHECK (length(event_id) BETWEEN 2 AND 255);
ALTER TABLE ingestions ADD COLUMN body_sha256 TEXT CHECK (length(body_sha256) = 64);
ALTER TABLE ingestions ADD COLUMN body_length BIGINT CHECK (body_length >= 0);
