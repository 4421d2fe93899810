-- A watch stopped by its account's state says so in its status: ACCOUNT_EXPIRED (account
-- validity, ORG_MATRIX_EXPIRED_ACCOUNT) and ACCOUNT_LOCKED (an administrator's lock,
-- M_USER_LOCKED), beside PAUSED (a refused token, a recovery key that no longer opens the
-- backup, another homeserver). None of them is run; giving the watch again makes it ACTIVE.
ALTER TABLE watches DROP CONSTRAINT watches_status_check;
ALTER TABLE watches ADD CONSTRAINT watches_status_check
    CHECK (status IN ('ACTIVE', 'PAUSED', 'ACCOUNT_EXPIRED', 'ACCOUNT_LOCKED'));
