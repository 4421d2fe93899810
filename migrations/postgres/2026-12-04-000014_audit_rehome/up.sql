-- A room answers to the homeserver it was archived from; an operator may move it to another
-- (`argus-tchap rooms rehome`), and the audit trail keeps that as a REHOME record naming the
-- homeserver it answered to until then. Adding a column and widening the CHECK rewrites no
-- record: the chain's existing links stay as they were hashed.
ALTER TABLE ingestions ADD COLUMN previous_homeserver_url TEXT
    CHECK (length(previous_homeserver_url) BETWEEN 1 AND 2048);
ALTER TABLE ingestions DROP CONSTRAINT ingestions_action_check;
ALTER TABLE ingestions ADD CONSTRAINT ingestions_action_check CHECK (action IN ('INGEST', 'POST', 'REHOME'));
ALTER TABLE ingestions ADD CONSTRAINT ingestions_rehome_names_the_previous_homeserver
    CHECK ((action = 'REHOME') = (previous_homeserver_url IS NOT NULL));
