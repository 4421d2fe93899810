ALTER TABLE watches DROP COLUMN credential_id;
DROP TABLE account_credentials;
