-- Account watches (live capture): every joined room of one Matrix account (or the listed ones)
-- kept current by one `/sync` long-poll loop per account, run by one replica at a time under a
-- lease (lease_owner, lease_until) renewed by the loop. One account watch per account and
-- organisation. Its credentials are sealed like a room watch's token (key id, nonce,
-- ciphertext); a refresh-token pair lives in the account's `account_credentials` row, which the
-- watch refers to (credential_id). The loop resumes from `sync_token` (the `/sync` position,
-- stored in the same transaction as the memberships it brought) with the stored filter
-- (`filter_id`). `rooms` is NULL (every joined room) or a JSON array of at most 1,000 room ids.
--
-- account_watch_rooms: the rooms the account's loop follows or followed, with the account's
-- membership (JOIN, LEAVE, BAN, INVITE: an invite is recorded, never accepted), who changed it
-- and when, and whether the room still has to be captured (`due`). Removed with their watch.
CREATE TABLE account_watches (
    id               BIGSERIAL PRIMARY KEY,
    org_id           TEXT     NOT NULL CHECK (length(org_id) BETWEEN 1 AND 64),
    owner            TEXT     NOT NULL CHECK (length(owner) BETWEEN 1 AND 255),
    homeserver_url   TEXT     NOT NULL CHECK (length(homeserver_url) <= 2048),
    user_id          TEXT     NOT NULL CHECK (length(user_id) BETWEEN 3 AND 255),
    classification   SMALLINT NOT NULL CHECK (classification BETWEEN 0 AND 4),
    timeout_secs     BIGINT   NOT NULL CHECK (timeout_secs BETWEEN 1 AND 3600),
    rooms            TEXT              CHECK (length(rooms) <= 262144 AND json_array_length(rooms::json) <= 1000),
    history_since    BIGINT,
    token_key_id     TEXT     NOT NULL CHECK (length(token_key_id) BETWEEN 1 AND 64),
    token_nonce      TEXT     NOT NULL CHECK (length(token_nonce) <= 64),
    token_ciphertext TEXT     NOT NULL CHECK (length(token_ciphertext) <= 16384),
    decrypts         BOOLEAN  NOT NULL DEFAULT FALSE,
    credential_id    BIGINT            REFERENCES account_credentials (id),
    status           TEXT     NOT NULL
        CHECK (status IN ('ACTIVE', 'PAUSED', 'ACCOUNT_EXPIRED', 'ACCOUNT_LOCKED')),
    status_reason    TEXT              CHECK (length(status_reason) <= 1024),
    sync_token       TEXT              CHECK (length(sync_token) BETWEEN 1 AND 4096),
    filter_id        TEXT              CHECK (length(filter_id) BETWEEN 1 AND 256),
    last_sync_at     BIGINT,
    created_at       BIGINT   NOT NULL,
    lease_owner      TEXT              CHECK (length(lease_owner) <= 255),
    lease_until      BIGINT,
    UNIQUE (org_id, homeserver_url, user_id)
);
CREATE INDEX account_watches_credential ON account_watches (credential_id);

CREATE TABLE account_watch_rooms (
    watch_id   BIGINT  NOT NULL REFERENCES account_watches (id) ON DELETE CASCADE,
    room_id    TEXT    NOT NULL CHECK (length(room_id) BETWEEN 2 AND 255),
    membership TEXT    NOT NULL CHECK (membership IN ('JOIN', 'LEAVE', 'BAN', 'INVITE')),
    by_user    TEXT             CHECK (length(by_user) <= 255),
    changed_at BIGINT  NOT NULL,
    due        BOOLEAN NOT NULL,
    PRIMARY KEY (watch_id, room_id)
);
