-- The earlier reading: `encrypted` only for messages left undecrypted.
UPDATE messages SET encrypted = FALSE WHERE decrypted AND encrypted;
