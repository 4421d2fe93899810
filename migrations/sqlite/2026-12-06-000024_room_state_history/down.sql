DROP TRIGGER room_states_no_delete;
DROP TRIGGER room_states_no_update;
DROP TABLE room_states;
