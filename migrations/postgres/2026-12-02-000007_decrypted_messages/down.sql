ALTER TABLE messages DROP COLUMN undecryptable;
ALTER TABLE messages DROP COLUMN decrypted;
