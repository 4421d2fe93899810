DROP TABLE attachments;
DROP TABLE media_blobs;
