-- PostGraphile benchmark peer: roles, grants and row-level security over the Argus store's
-- read tables (rooms, messages, message_counts), plus the custom count query.
--
-- Run as a superuser on the database that holds the Argus migrations (idempotent):
--   psql -X -v ON_ERROR_STOP=1 -v peer_password=SECRET -d SUPERUSER_URL -f rls.sql
-- peer_password defaults to 'argus-bench-peer'.
--
-- Roles (cluster-wide):
--   argus_postgraphile  LOGIN, NOINHERIT: the role PostGraphile connects as; no table rights of
--                       its own, it only switches (SET LOCAL role) to argus_viewer per request.
--   argus_viewer        NOLOGIN: SELECT on the three tables, under the policies below.
--
-- A request's JWT {"role": "argus_viewer", "org": ..., "clearance": 0..4, "aud": "postgraphile"}
-- becomes, for that transaction, role argus_viewer and the settings jwt.claims.org and
-- jwt.claims.clearance, which the policies read. Without a JWT (or without the claims) the
-- settings are missing or '' (a custom setting set LOCAL by an earlier transaction on the same
-- connection reverts to '', not to NULL, hence NULLIF) and every policy is false: nothing shows.
--
-- The tables' owner and superusers bypass these policies (no FORCE), so the Argus server itself,
-- connected as the owner, reads exactly as before.

\set ON_ERROR_STOP 1
SET client_min_messages = warning;
\if :{?peer_password}
\else
\set peer_password 'argus-bench-peer'
\endif

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'argus_viewer') THEN
        CREATE ROLE argus_viewer NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'argus_postgraphile') THEN
        CREATE ROLE argus_postgraphile LOGIN NOINHERIT;
    END IF;
END
$$;
ALTER ROLE argus_postgraphile WITH LOGIN NOINHERIT PASSWORD :'peer_password';
GRANT argus_viewer TO argus_postgraphile;

BEGIN;

GRANT USAGE ON SCHEMA public TO argus_viewer;
GRANT SELECT ON rooms, messages, message_counts TO argus_viewer;

ALTER TABLE rooms ENABLE ROW LEVEL SECURITY;
ALTER TABLE messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE message_counts ENABLE ROW LEVEL SECURITY;

DROP POLICY IF EXISTS argus_viewer_read ON rooms;
CREATE POLICY argus_viewer_read ON rooms FOR SELECT TO argus_viewer USING (
    org_id = current_setting('jwt.claims.org', true)
    AND classification <= NULLIF(current_setting('jwt.claims.clearance', true), '')::smallint
);

DROP POLICY IF EXISTS argus_viewer_read ON messages;
CREATE POLICY argus_viewer_read ON messages FOR SELECT TO argus_viewer USING (
    org_id = current_setting('jwt.claims.org', true)
    AND classification <= NULLIF(current_setting('jwt.claims.clearance', true), '')::smallint
);

DROP POLICY IF EXISTS argus_viewer_read ON message_counts;
CREATE POLICY argus_viewer_read ON message_counts FOR SELECT TO argus_viewer USING (
    org_id = current_setting('jwt.claims.org', true)
    AND classification <= NULLIF(current_setting('jwt.claims.clearance', true), '')::smallint
);

-- The variant "count from message_counts": the room's visible message count as a sum of at most
-- five rows, exposed by PostGraphile as the query field roomMessageCount(room: BigInt!): BigInt.
-- A plain STABLE SQL function (not SECURITY DEFINER): it runs as the caller, so the policy on
-- message_counts adds the organisation and clearance filter, like the store's own count.
CREATE OR REPLACE FUNCTION room_message_count(room BIGINT) RETURNS BIGINT
    LANGUAGE sql STABLE STRICT PARALLEL SAFE
AS $$
    SELECT CAST(COALESCE(SUM(c.message_count), 0) AS BIGINT)
    FROM message_counts c
    WHERE c.room_pk = room
$$;
COMMENT ON FUNCTION room_message_count(BIGINT) IS
    'Visible message count of a room (rooms.id), summed from message_counts under row-level security.';
REVOKE ALL ON FUNCTION room_message_count(BIGINT) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION room_message_count(BIGINT) TO argus_viewer;

COMMIT;
