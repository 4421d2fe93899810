DROP TABLE message_redactions;
DROP TABLE message_versions;
