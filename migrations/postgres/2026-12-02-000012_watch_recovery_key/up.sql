-- A watch may hold its owner's recovery key, sealed in the same ciphertext as the token (never
-- in clear): its scheduled runs then decrypt end-to-end encrypted history. This column only
-- says whether it does, for the watch's listing.
ALTER TABLE watches ADD COLUMN decrypts BOOLEAN NOT NULL DEFAULT FALSE;
