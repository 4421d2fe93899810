-- A message decrypted from the key backup arrived as m.room.encrypted: `encrypted` tells whether
-- the event was encrypted, `decrypted` whether its content was read. Rows stored before said
-- `encrypted = FALSE` once decrypted (at capture, or when a later ingestion filled them in).
UPDATE messages SET encrypted = TRUE WHERE decrypted AND NOT encrypted;
