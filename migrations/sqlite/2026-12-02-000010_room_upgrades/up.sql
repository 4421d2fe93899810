-- Room upgrades: the room a room replaced (m.room.create predecessor) and the room that
-- replaced it (m.room.tombstone), as its state said at the last ingestion.
ALTER TABLE rooms ADD COLUMN predecessor_room_id TEXT CHECK (length(predecessor_room_id) BETWEEN 2 AND 255);
ALTER TABLE rooms ADD COLUMN successor_room_id TEXT CHECK (length(successor_room_id) BETWEEN 2 AND 255);
