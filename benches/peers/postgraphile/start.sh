#!/usr/bin/env bash
# Starts the PostGraphile benchmark peer in the foreground (exec: the PID you spawned is node's).
#
#   ARGUS_PEER_JWT_SECRET=... start.sh SUPERUSER_URL PORT
#
# SUPERUSER_URL  postgres://USER[:PASSWORD]@HOST:PORT/DB of a superuser, on the database that holds
#                the Argus migrations and the benchmark data. rls.sql is applied there (idempotent).
# PORT           TCP port PostGraphile listens on, on 127.0.0.1; endpoint: POST /graphql.
#
# Environment:
#   ARGUS_PEER_JWT_SECRET     required: HS256 secret of the bearer tokens (see mint-jwt.js).
#   ARGUS_PEER_PG_PASSWORD    password given to the login role argus_postgraphile
#                             (default: argus-bench-peer).
#   ARGUS_PEER_MAX_POOL_SIZE  PostGraphile's pool size (default: 10, PostGraphile's own default).
#   ARGUS_PEER_DIR            install directory (default: <repo>/target/peers/postgraphile).
#
# Exit 77 (before anything is started): skipped, a tool is missing (node, npm, psql) or the npm
# install failed; a loud message says which on stderr. Exit 64: bad arguments. Otherwise the
# exit status is PostGraphile's. Install and set-up output goes to stderr.
set -u

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
dir="${ARGUS_PEER_DIR:-$root/target/peers/postgraphile}"
marker="$dir/.argus-package.sha256"

peer="PostGraphile"
# shellcheck source=../skip.sh
. "$here/../skip.sh"

usage() {
    echo "usage: ARGUS_PEER_JWT_SECRET=... $0 SUPERUSER_URL PORT" >&2
    exit 64
}

[ $# -eq 2 ] || usage
superuser_url="$1"
port="$2"
case "$port" in '' | *[!0-9]*) usage ;; esac
[ -n "${ARGUS_PEER_JWT_SECRET:-}" ] || { echo "$0: ARGUS_PEER_JWT_SECRET is not set" >&2; exit 64; }
password="${ARGUS_PEER_PG_PASSWORD:-argus-bench-peer}"
pool="${ARGUS_PEER_MAX_POOL_SIZE:-10}"

command -v node >/dev/null 2>&1 || skip "'node' not found on PATH (Debian: apt-get install nodejs npm)"
command -v npm >/dev/null 2>&1 || skip "'npm' not found on PATH (Debian: apt-get install npm)"
command -v psql >/dev/null 2>&1 || skip "'psql' not found on PATH (Debian: apt-get install postgresql-client)"
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 16 ? 0 : 1)' \
    || skip "node $(node --version) is older than 16"

# Install postgraphile@4.14.1 from package.json + package-lock.json (npm ci: exact tree).
hash="$(cat "$here/package.json" "$here/package-lock.json" | sha256sum | cut -d' ' -f1)" \
    || skip "cannot hash $here/package.json and package-lock.json"
if [ ! -f "$marker" ] || [ "$(cat "$marker")" != "$hash" ] || [ ! -e "$dir/node_modules/postgraphile/cli.js" ]; then
    mkdir -p "$dir" || skip "cannot create $dir"
    rm -f "$marker"
    cp "$here/package.json" "$here/package-lock.json" "$dir/" || skip "cannot copy package files to $dir"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2) \
        || skip "npm ci in $dir failed (no network to the npm registry?)"
    echo "$hash" >"$marker"
fi
version="$(node -p 'require(process.argv[1]).version' "$dir/node_modules/postgraphile/package.json" 2>/dev/null)"
[ "$version" = "4.14.1" ] || skip "installed postgraphile is '$version', expected 4.14.1"

# Roles, grants, row-level security and the count function.
psql -X -q -v ON_ERROR_STOP=1 -v peer_password="$password" -d "$superuser_url" -f "$here/rls.sql" >&2 \
    || { echo "$0: applying rls.sql failed" >&2; exit 1; }

# Same server and database, as the login role.
login_url="$(node -e '
    const u = new URL(process.argv[1]);
    u.username = "argus_postgraphile";
    u.password = process.argv[2];
    process.stdout.write(u.href);
' "$superuser_url" "$password")" || { echo "$0: cannot parse SUPERUSER_URL as a postgres:// URL" >&2; exit 64; }

export NODE_ENV=production
exec node "$dir/node_modules/postgraphile/cli.js" \
    --connection "$login_url" \
    --schema public \
    --host 127.0.0.1 \
    --port "$port" \
    --max-pool-size "$pool" \
    --jwt-secret "$ARGUS_PEER_JWT_SECRET" \
    --jwt-verify-algorithms HS256 \
    --jwt-verify-audience postgraphile \
    --default-role argus_viewer \
    --no-ignore-rbac \
    --disable-default-mutations \
    --legacy-relations omit \
    --no-setof-functions-contain-nulls \
    --disable-graphiql \
    --disable-query-log
