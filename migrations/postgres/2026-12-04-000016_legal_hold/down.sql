ALTER TABLE message_versions DROP COLUMN held_body;
ALTER TABLE message_versions DROP COLUMN held_msgtype;
ALTER TABLE messages DROP COLUMN held_media;
ALTER TABLE messages DROP COLUMN held_body;
