-- Back to a trail without REHOME records (refused while one exists: the CHECK fails).
ALTER TABLE ingestions DROP CONSTRAINT ingestions_rehome_names_the_previous_homeserver;
ALTER TABLE ingestions DROP CONSTRAINT ingestions_action_check;
ALTER TABLE ingestions ADD CONSTRAINT ingestions_action_check CHECK (action IN ('INGEST', 'POST'));
ALTER TABLE ingestions DROP COLUMN previous_homeserver_url;
