-- The two statements the Argus store runs for one tchapMessages(first: 100) page, as pgbench
-- variables: :org (organisation id, text), :clr (viewer's clearance rank 0..4), :pk (rooms.id).
-- Run with -M prepared: each variable is then sent as a bind parameter ($1, $2, $3) of a
-- prepared statement, as the store does, and :org needs no quoting. (In the default simple
-- mode pgbench pastes values textually and :org would have to be passed pre-quoted.)
SELECT m.* FROM messages m WHERE m.org_id = :org AND m.classification <= :clr AND m.room_pk = :pk ORDER BY m.sent_at, m.id LIMIT 101;
SELECT CAST(COALESCE(SUM(c.message_count), 0) AS BIGINT) FROM message_counts c WHERE c.org_id = :org AND c.classification <= :clr AND c.room_pk = :pk;
