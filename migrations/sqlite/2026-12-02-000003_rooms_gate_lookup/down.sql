DROP INDEX rooms_gate_lookup;
