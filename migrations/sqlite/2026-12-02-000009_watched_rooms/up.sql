-- Watched rooms: the scheduler keeps a room current on an interval with its owner's Matrix
-- token, sealed with an AEAD key held outside the database (key id, nonce, ciphertext), never
-- in clear. Due watches are shared by server replicas through leases (lease_owner,
-- lease_until): a replica that dies leaves its lease to expire and another takes the watch.
CREATE TABLE watches (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id           TEXT     NOT NULL CHECK (length(org_id) BETWEEN 1 AND 64),
    owner            TEXT     NOT NULL CHECK (length(owner) BETWEEN 1 AND 255),
    room_id          TEXT     NOT NULL CHECK (length(room_id) BETWEEN 2 AND 255),
    homeserver_url   TEXT     NOT NULL CHECK (length(homeserver_url) <= 2048),
    classification   SMALLINT NOT NULL CHECK (classification BETWEEN 0 AND 4),
    interval_secs    BIGINT   NOT NULL CHECK (interval_secs >= 1),
    token_key_id     TEXT     NOT NULL CHECK (length(token_key_id) BETWEEN 1 AND 64),
    token_nonce      TEXT     NOT NULL CHECK (length(token_nonce) <= 64),
    token_ciphertext TEXT     NOT NULL CHECK (length(token_ciphertext) <= 16384),
    status           TEXT     NOT NULL CHECK (status IN ('ACTIVE', 'PAUSED')),
    status_reason    TEXT              CHECK (length(status_reason) <= 1024),
    next_run_at      BIGINT   NOT NULL,
    lease_owner      TEXT              CHECK (length(lease_owner) <= 255),
    lease_until      BIGINT,
    last_run_at      BIGINT,
    last_outcome     TEXT              CHECK (last_outcome IN ('SUCCEEDED', 'FAILED')),
    last_error       TEXT              CHECK (length(last_error) <= 1024),
    created_at       BIGINT   NOT NULL,
    UNIQUE (org_id, room_id)
);
CREATE INDEX watches_due ON watches (next_run_at);

-- A scheduled run is audited like a manual one, marked as scheduled (and hashed with the mark).
ALTER TABLE ingestions ADD COLUMN scheduled BOOLEAN NOT NULL DEFAULT FALSE;
