-- What Tchap says about a room in its state, as it said at the last ingestion: its room
-- version, its retention policy (m.room.retention, milliseconds), its access rule
-- (im.vector.room.access_rules) and its joined members on external homeservers. The room as of
-- each ingestion, these included, is kept by the outbox's payloads.
ALTER TABLE rooms ADD COLUMN room_version TEXT CHECK (length(room_version) BETWEEN 1 AND 32);
ALTER TABLE rooms ADD COLUMN retention_max_lifetime_ms BIGINT CHECK (retention_max_lifetime_ms > 0);
ALTER TABLE rooms ADD COLUMN retention_min_lifetime_ms BIGINT CHECK (retention_min_lifetime_ms > 0);
ALTER TABLE rooms ADD COLUMN access_rule TEXT CHECK (length(access_rule) BETWEEN 1 AND 64);
ALTER TABLE rooms ADD COLUMN external_member_count BIGINT NOT NULL DEFAULT 0 CHECK (external_member_count >= 0);
-- Capture from a date: the history is complete since this date (UTC ms; NULL: since the
-- room's creation), and a watch's every run starts there.
ALTER TABLE rooms ADD COLUMN history_since BIGINT;
ALTER TABLE watches ADD COLUMN history_since BIGINT;
