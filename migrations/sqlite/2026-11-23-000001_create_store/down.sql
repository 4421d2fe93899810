DROP TABLE outbox;
DROP TRIGGER ingestions_no_delete;
DROP TRIGGER ingestions_no_update;
DROP TABLE ingestions;
DROP TABLE messages;
DROP TABLE rooms;
