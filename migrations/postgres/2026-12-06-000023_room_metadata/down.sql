ALTER TABLE watches DROP COLUMN history_since;
ALTER TABLE rooms DROP COLUMN history_since;
ALTER TABLE rooms DROP COLUMN external_member_count;
ALTER TABLE rooms DROP COLUMN access_rule;
ALTER TABLE rooms DROP COLUMN retention_min_lifetime_ms;
ALTER TABLE rooms DROP COLUMN retention_max_lifetime_ms;
ALTER TABLE rooms DROP COLUMN room_version;
