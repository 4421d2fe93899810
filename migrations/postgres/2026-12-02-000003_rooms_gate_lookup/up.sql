-- A room looked up by its Matrix id is found through an index that also holds the gate's
-- classification: a room above the reader's clearance is rejected inside the index, exactly
-- where a missing room is not found, instead of after a read of its row (a timing oracle).
CREATE INDEX rooms_gate_lookup ON rooms (org_id, room_id, classification);
