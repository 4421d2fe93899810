-- Back to two statuses: a watch stopped by its account's state is PAUSED (its reason kept).
UPDATE watches SET status = 'PAUSED' WHERE status IN ('ACCOUNT_EXPIRED', 'ACCOUNT_LOCKED');
ALTER TABLE watches DROP CONSTRAINT watches_status_check;
ALTER TABLE watches ADD CONSTRAINT watches_status_check CHECK (status IN ('ACTIVE', 'PAUSED'));
