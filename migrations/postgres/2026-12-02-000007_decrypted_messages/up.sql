-- Encrypted history decrypted from the account's key backup: a message that arrived as
-- m.room.encrypted and was decrypted says so; one that stayed undecrypted although a recovery
-- key was given keeps the reason (a stable code).
ALTER TABLE messages ADD COLUMN decrypted BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE messages ADD COLUMN undecryptable TEXT CHECK (length(undecryptable) <= 64);
