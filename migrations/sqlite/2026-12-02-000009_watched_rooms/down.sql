ALTER TABLE ingestions DROP COLUMN scheduled;
DROP TABLE watches;
