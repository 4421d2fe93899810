-- A refresh token belongs to the account's Matrix session, not to a room: every watch of one
-- account (organisation, owner, homeserver, Matrix user) that was given a refresh token refers
-- to one credential row holding the sealed pair (bound to that account, not to a room), renewed
-- once per expiry under the row's own short lease (lease_owner: one renewer, replica and
-- nonce). A watch without a refresh token keeps its own sealed token (credential_id NULL).
CREATE TABLE account_credentials (
    id               BIGSERIAL PRIMARY KEY,
    org_id           TEXT   NOT NULL CHECK (length(org_id) BETWEEN 1 AND 64),
    owner            TEXT   NOT NULL CHECK (length(owner) BETWEEN 1 AND 255),
    homeserver_url   TEXT   NOT NULL CHECK (length(homeserver_url) <= 2048),
    user_id          TEXT   NOT NULL CHECK (length(user_id) BETWEEN 3 AND 255),
    token_key_id     TEXT   NOT NULL CHECK (length(token_key_id) BETWEEN 1 AND 64),
    token_nonce      TEXT   NOT NULL CHECK (length(token_nonce) <= 64),
    token_ciphertext TEXT   NOT NULL CHECK (length(token_ciphertext) <= 16384),
    lease_owner      TEXT            CHECK (length(lease_owner) <= 255),
    lease_until      BIGINT,
    updated_at       BIGINT NOT NULL,
    UNIQUE (org_id, owner, homeserver_url, user_id)
);
ALTER TABLE watches ADD COLUMN credential_id BIGINT;
