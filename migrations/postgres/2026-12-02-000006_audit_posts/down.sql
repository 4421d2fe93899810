ALTER TABLE ingestions DROP COLUMN body_length;
ALTER TABLE ingestions DROP COLUMN body_sha256;
ALTER TABLE ingestions DROP COLUMN event_id;
ALTER TABLE ingestions DROP COLUMN action;
