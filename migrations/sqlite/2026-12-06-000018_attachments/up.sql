-- Attachments as evidence. A blob is a file's bytes, held once whatever the rooms and
-- organisations it came from (content-addressed by SHA-256 in the blob store); its scan verdict
-- is the blob's. An attachment is one message's reference to its file: read only through the
-- store's read gate, joined to its message (organisation, classification, not redacted), so
-- each reference keeps the gate of its own message.
CREATE TABLE media_blobs (
    sha256           TEXT    PRIMARY KEY CHECK (length(sha256) = 64),
    size             BIGINT  NOT NULL CHECK (size >= 0),
    sniffed_mimetype TEXT    NOT NULL CHECK (length(sniffed_mimetype) <= 255),
    -- NULL until a scanner answered OK or FOUND: never served before.
    verdict          TEXT             CHECK (verdict IN ('CLEAN', 'INFECTED')),
    threat           TEXT             CHECK (length(threat) <= 1024),
    engine           TEXT             CHECK (length(engine) <= 255),
    scanned_at       BIGINT,
    stored_at        BIGINT  NOT NULL,
    -- Attempts at a verdict that failed for this file alone (a limit, a reply cut short), and
    -- when to try again: one file the scanner cannot judge never holds the others back.
    scan_attempts    INTEGER NOT NULL DEFAULT 0,
    next_scan_at     BIGINT  NOT NULL DEFAULT 0
);
CREATE INDEX media_blobs_unscanned ON media_blobs (next_scan_at, stored_at) WHERE verdict IS NULL;
CREATE TABLE attachments (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id            TEXT    NOT NULL,
    message_pk        BIGINT  NOT NULL REFERENCES messages (id),
    room_pk           BIGINT  NOT NULL REFERENCES rooms (id),
    mxc_uri           TEXT    NOT NULL CHECK (length(mxc_uri) <= 1024),
    filename          TEXT             CHECK (length(filename) <= 1024),
    declared_mimetype TEXT             CHECK (length(declared_mimetype) <= 255),
    declared_size     BIGINT,
    encrypted         BOOLEAN NOT NULL,
    -- The EncryptedFile of an encrypted attachment (its key included), as its decrypted message
    -- carried it; never served.
    file              TEXT             CHECK (length(file) <= 4096),
    -- FETCHED: its bytes are the blob `sha256`; the status read is then the blob's verdict
    -- (none yet: PENDING; CLEAN: STORED; INFECTED: INFECTED).
    state             TEXT    NOT NULL CHECK (state IN ('PENDING', 'FETCHED', 'TOO_LARGE', 'TAMPERED', 'UNAVAILABLE', 'UNDECRYPTABLE')),
    reason            TEXT             CHECK (length(reason) <= 512),
    sha256            TEXT             REFERENCES media_blobs (sha256),
    fetched_at        BIGINT,
    attempts          INTEGER NOT NULL DEFAULT 0,
    next_attempt_at   BIGINT  NOT NULL DEFAULT 0,
    lease_owner       TEXT,
    lease_until       BIGINT,
    UNIQUE (org_id, message_pk)
);
CREATE INDEX attachments_due ON attachments (next_attempt_at) WHERE state = 'PENDING';
CREATE INDEX attachments_by_blob ON attachments (sha256);
