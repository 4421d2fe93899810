DROP TABLE outbox;
DROP TABLE ingestions;
DROP FUNCTION ingestions_append_only();
DROP TABLE messages;
DROP TABLE rooms;
