-- A watch stopped by its account's state says so in its status: ACCOUNT_EXPIRED (account
-- validity, ORG_MATRIX_EXPIRED_ACCOUNT) and ACCOUNT_LOCKED (an administrator's lock,
-- M_USER_LOCKED), beside PAUSED (a refused token, a recovery key that no longer opens the
-- backup, another homeserver). None of them is run; giving the watch again makes it ACTIVE.
--
-- SQLite cannot widen a CHECK in place. Rather than rebuilding the table (which would have to
-- name every column, those added by other migrations included), the status moves to a new
-- column with the wider CHECK, and the old column, whose CHECK is its own, is dropped. The
-- column's values and every other column are kept as they are.
ALTER TABLE watches ADD COLUMN status_widened TEXT NOT NULL DEFAULT 'ACTIVE'
    CHECK (status_widened IN ('ACTIVE', 'PAUSED', 'ACCOUNT_EXPIRED', 'ACCOUNT_LOCKED'));
UPDATE watches SET status_widened = status;
ALTER TABLE watches DROP COLUMN status;
ALTER TABLE watches RENAME COLUMN status_widened TO status;
