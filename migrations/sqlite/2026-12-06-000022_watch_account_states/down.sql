-- Back to two statuses: a watch stopped by its account's state is PAUSED (its reason kept).
ALTER TABLE watches ADD COLUMN status_narrowed TEXT NOT NULL DEFAULT 'ACTIVE'
    CHECK (status_narrowed IN ('ACTIVE', 'PAUSED'));
UPDATE watches SET status_narrowed = CASE WHEN status = 'ACTIVE' THEN 'ACTIVE' ELSE 'PAUSED' END;
ALTER TABLE watches DROP COLUMN status;
ALTER TABLE watches RENAME COLUMN status_narrowed TO status;
