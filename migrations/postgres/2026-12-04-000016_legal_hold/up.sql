-- Legal hold: a redaction that reaches the archive after it captured the message purges what
-- everyone reads (body, attachment; each version's msgtype and body), as before, but the content
-- captured is first sealed here, beside it, instead of being thrown away; the first content held
-- is never replaced. The same for an edit its sender withdraws (a redacted edit kept as a
-- version). These columns are never indexed for search, and are read only through the store's
-- one read gate, for a reader of the organisation at a sufficient clearance holding
-- `tchap:redacted`. With `evidence.keep_redacted = false` nothing is written here.
ALTER TABLE messages ADD COLUMN held_body TEXT CHECK (length(held_body) <= 65536);
ALTER TABLE messages ADD COLUMN held_media TEXT CHECK (length(held_media) <= 4096);
ALTER TABLE message_versions ADD COLUMN held_msgtype TEXT CHECK (length(held_msgtype) <= 255);
ALTER TABLE message_versions ADD COLUMN held_body TEXT CHECK (length(held_body) <= 65536);
