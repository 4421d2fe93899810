-- The connector's end-to-end-encryption devices: one per watched account (organisation,
-- homeserver, Matrix user, device id), whose state (the Olm account, sessions, room keys, ...)
-- is kept as items, each sealed at rest like a watch's token (key id, nonce, ciphertext) with
-- a key held outside the database. Items are written only under the account watch's lease
-- (checked in the writing transaction); removed with their device.
--
-- messages.sender_trust: what the connector's device knew of the device that sent a message
-- when it decrypted it (NULL: stored before devices existed; read as UNKNOWN_DEVICE when the
-- message arrived encrypted, else NOT_ENCRYPTED).
CREATE TABLE e2ee_devices (
    id             BIGSERIAL PRIMARY KEY,
    org_id         TEXT   NOT NULL CHECK (length(org_id) BETWEEN 1 AND 64),
    homeserver_url TEXT   NOT NULL CHECK (length(homeserver_url) <= 2048),
    user_id        TEXT   NOT NULL CHECK (length(user_id) BETWEEN 1 AND 255),
    device_id      TEXT   NOT NULL CHECK (length(device_id) BETWEEN 1 AND 255),
    created_at     BIGINT NOT NULL,
    UNIQUE (org_id, homeserver_url, user_id, device_id)
);

CREATE TABLE e2ee_device_items (
    device_pk  BIGINT NOT NULL REFERENCES e2ee_devices (id) ON DELETE CASCADE,
    kind       TEXT   NOT NULL CHECK (length(kind) BETWEEN 1 AND 64),
    item_key   TEXT   NOT NULL CHECK (length(item_key) BETWEEN 1 AND 1024),
    key_id     TEXT   NOT NULL CHECK (length(key_id) BETWEEN 1 AND 64),
    nonce      TEXT   NOT NULL CHECK (length(nonce) <= 64),
    ciphertext TEXT   NOT NULL CHECK (length(ciphertext) BETWEEN 1 AND 8388608),
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (device_pk, kind, item_key)
);

ALTER TABLE messages ADD COLUMN sender_trust TEXT
    CHECK (sender_trust IN ('VERIFIED', 'UNVERIFIED_DEVICE', 'IDENTITY_CHANGED', 'UNKNOWN_DEVICE', 'NOT_ENCRYPTED'));
