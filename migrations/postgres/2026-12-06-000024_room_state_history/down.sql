DROP TABLE room_states;
DROP FUNCTION room_states_append_only();
