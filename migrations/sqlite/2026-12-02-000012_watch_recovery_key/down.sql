ALTER TABLE watches DROP COLUMN decrypts;
