#!/usr/bin/env bash
# Helpers around start.sh for the PostGraphile benchmark peer.
#
#   peer.sh body DOC.graphql ROOM_PK
#       Prints the JSON request body {"query": <DOC>, "variables": {"room": "<ROOM_PK>"}}.
#   peer.sh wait PORT [TIMEOUT_SECONDS]
#       Exits 0 as soon as POST http://127.0.0.1:PORT/graphql {"query":"{__typename}"} answers
#       200 with {"data":{"__typename":"Query"}}; exits 1 after TIMEOUT_SECONDS (default 60).
#   ARGUS_PEER_JWT_SECRET=... peer.sh bench SUPERUSER_URL PORT ROOM_PK ORG CLEARANCE [DURATION]
#       The whole cycle: start.sh in the background, wait, one check request per document (the
#       page must hold 100 edges), then for each document
#       wrk -t2 -c32 -d${DURATION:-10s} --timeout 30s --latency -s post.lua URL -- BODY TOKEN,
#       then stops it.
#
# Exit 77: skipped, a tool is missing (node, npm, psql, curl, wrk) or the install failed.
set -u

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
docs=(query-totalcount.graphql query-counts.graphql)

peer="PostGraphile"
# shellcheck source=../skip.sh
. "$here/../skip.sh"


body() {
    node -e '
        const fs = require("fs");
        const [doc, room] = process.argv.slice(1);
        process.stdout.write(JSON.stringify({ query: fs.readFileSync(doc, "utf8"), variables: { room } }));
    ' "$1" "$2"
}

wait_ready() {
    local port="$1" timeout="${2:-60}" deadline answer
    deadline=$((SECONDS + timeout))
    while [ "$SECONDS" -lt "$deadline" ]; do
        answer="$(curl -s -m 2 -H 'Content-Type: application/json' \
            --data '{"query":"{__typename}"}' "http://127.0.0.1:$port/graphql" 2>/dev/null)"
        [ "$answer" = '{"data":{"__typename":"Query"}}' ] && return 0
        sleep 0.2
    done
    echo "$0: PostGraphile did not answer on 127.0.0.1:$port within ${timeout}s" >&2
    return 1
}

bench() {
    [ $# -ge 5 ] || { echo "usage: $0 bench SUPERUSER_URL PORT ROOM_PK ORG CLEARANCE [DURATION]" >&2; exit 64; }
    local superuser_url="$1" port="$2" room="$3" org="$4" clearance="$5" duration="${6:-10s}"
    need node npm psql curl wrk
    local work pid token doc status
    work="$(mktemp -d)"
    "$here/start.sh" "$superuser_url" "$port" >"$work/postgraphile.log" 2>&1 &
    pid=$!
    # shellcheck disable=SC2064
    trap "kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf '$work'" EXIT
    if ! wait_ready "$port" 120; then
        if ! kill -0 "$pid" 2>/dev/null; then
            wait "$pid"
            status=$?
            cat "$work/postgraphile.log" >&2
            [ "$status" -eq 77 ] && exit 77
        fi
        exit 1
    fi
    token="$(node "$here/mint-jwt.js" "$org" "$clearance")" || exit 1
    for doc in "${docs[@]}"; do
        body "$here/$doc" "$room" >"$work/$doc.json" || exit 1
        curl -s -H 'Content-Type: application/json' -H "Authorization: Bearer $token" \
            --data-binary "@$work/$doc.json" "http://127.0.0.1:$port/graphql" >"$work/$doc.out"
        node -e '
            const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
            const page = r.data && r.data.allMessages;
            if (r.errors || !page || page.edges.length !== 100) {
                console.error("unexpected answer: " + JSON.stringify(r).slice(0, 500));
                process.exit(1);
            }
            const count = "totalCount" in page ? page.totalCount : r.data.roomMessageCount;
            console.log(process.argv[2] + ": 100 edges, count " + count);
        ' "$work/$doc.out" "$doc" || exit 1
        echo "== wrk $doc"
        wrk -t2 -c32 -d"$duration" --timeout 30s --latency -s "$here/post.lua" "http://127.0.0.1:$port/graphql" \
            -- "$work/$doc.json" "$token"
    done
}

case "${1:-}" in
    body) [ $# -eq 3 ] || { echo "usage: $0 body DOC.graphql ROOM_PK" >&2; exit 64; }; need node; body "$2" "$3" ;;
    wait) [ $# -ge 2 ] || { echo "usage: $0 wait PORT [TIMEOUT_SECONDS]" >&2; exit 64; }; need curl; wait_ready "$2" "${3:-60}" ;;
    bench) shift; bench "$@" ;;
    *) echo "usage: $0 body|wait|bench ... (see the header of $0)" >&2; exit 64 ;;
esac
