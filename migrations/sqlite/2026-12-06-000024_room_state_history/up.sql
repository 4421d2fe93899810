-- The history of a room's state: what each ingestion observed of it (name, topic, encryption,
-- room version, retention policy, access rule, external members), one row each time it
-- differed from the room's latest row (a room's first ingestion always adds one). Rows belong
-- to the room's row (org_id and room_pk), are read through the room's gate, follow the room
-- when it moves to another homeserver and, like the audit trail, are never updated or deleted.
CREATE TABLE room_states (
    id                        INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id                    TEXT    NOT NULL CHECK (length(org_id) BETWEEN 1 AND 64),
    room_pk                   BIGINT  NOT NULL REFERENCES rooms (id),
    -- The run that observed it (its audit record's run_id).
    run_id                    BIGINT  NOT NULL,
    observed_at               BIGINT  NOT NULL,
    name                      TEXT             CHECK (length(name) <= 4096),
    topic                     TEXT             CHECK (length(topic) <= 65536),
    encrypted                 BOOLEAN NOT NULL,
    room_version              TEXT             CHECK (length(room_version) BETWEEN 1 AND 32),
    retention_max_lifetime_ms BIGINT           CHECK (retention_max_lifetime_ms > 0),
    retention_min_lifetime_ms BIGINT           CHECK (retention_min_lifetime_ms > 0),
    access_rule               TEXT             CHECK (length(access_rule) BETWEEN 1 AND 64),
    external_member_count     BIGINT  NOT NULL CHECK (external_member_count >= 0)
);
-- A room's history, newest first, and its latest row.
CREATE INDEX room_states_room ON room_states (org_id, room_pk, id);

CREATE TRIGGER room_states_no_update BEFORE UPDATE ON room_states
BEGIN
    SELECT RAISE(ABORT, 'the history of room state is append-only');
END;
CREATE TRIGGER room_states_no_delete BEFORE DELETE ON room_states
BEGIN
    SELECT RAISE(ABORT, 'the history of room state is append-only');
END;
