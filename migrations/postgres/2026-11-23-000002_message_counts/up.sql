-- How many messages each room holds per classification, so that a room's totalCount is a sum of
-- at most five rows instead of a count of its messages on every read. record_ingestion keeps it
-- in the same transaction as the messages; it carries org_id like every tenant-owned table.
CREATE TABLE message_counts (
    org_id         TEXT     NOT NULL,
    room_pk        BIGINT   NOT NULL REFERENCES rooms (id),
    classification SMALLINT NOT NULL CHECK (classification BETWEEN 0 AND 4),
    message_count  BIGINT   NOT NULL CHECK (message_count >= 0),
    UNIQUE (org_id, room_pk, classification)
);
INSERT INTO message_counts (org_id, room_pk, classification, message_count)
    SELECT org_id, room_pk, classification, COUNT(*) FROM messages GROUP BY org_id, room_pk, classification;
