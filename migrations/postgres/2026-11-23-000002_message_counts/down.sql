DROP TABLE message_counts;
