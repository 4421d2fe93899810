ALTER TABLE rooms DROP COLUMN successor_room_id;
ALTER TABLE rooms DROP COLUMN predecessor_room_id;
