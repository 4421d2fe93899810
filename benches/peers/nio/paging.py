#!/usr/bin/env python3
"""Benchmark peer: pages a room's history backwards with matrix-nio.

Uses ``AsyncClient.room_messages`` only. The client is given an access token,
user id and device id directly: no login, no /sync, no whoami, so the only
requests sent are

    GET /_matrix/client/v3/rooms/{room}/messages?limit=N&dir=b          (first page)
    GET /_matrix/client/v3/rooms/{room}/messages?limit=N&from=END&dir=b (next pages)

with ``Authorization: Bearer TOKEN`` (room id percent-encoded, e.g.
``%21bench%3Atchap.test``). Paging stops when ``end`` is absent or the chunk is
empty. Each event is parsed by nio into its Event objects (nio's default
parsing, with its jsonschema validation), which is what is being compared.

Prints one JSON line per repetition on stdout:
    {"events": n, "pages": p, "seconds": s}
``seconds`` is time.perf_counter() around the paging loop only. One client is
created (outside the timing) and reused for every repetition, so its aiohttp
session and keep-alive connection are reused across pages and repetitions;
the first repetition also pays for opening the session and the connection.

Exit status: 0 on success, 1 when the homeserver answers an error or cannot be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time

from aiohttp import ClientError
from nio import AsyncClient, AsyncClientConfig, RoomMessagesError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--homeserver", required=True, help="base URL, e.g. http://127.0.0.1:8008")
    parser.add_argument("--token", required=True, help="access token (sent as a Bearer header)")
    parser.add_argument("--room", required=True, help="room id, e.g. !bench:tchap.test")
    parser.add_argument("--limit", type=int, default=1000, help="events per request (default 1000)")
    parser.add_argument("--repeat", type=int, default=1, help="repetitions (default 1)")
    parser.add_argument("--user", default="@bench:tchap.test", help="user id set on the client")
    parser.add_argument("--device", default="ARGUSBENCH", help="device id set on the client")
    args = parser.parse_args(argv)
    if args.limit < 1 or args.repeat < 1:
        parser.error("--limit and --repeat must be at least 1")
    return args


async def page_once(client: AsyncClient, room: str, limit: int) -> tuple[int, int, float]:
    events = 0
    pages = 0
    start = time.perf_counter()
    token = None  # no `from` on the first request: nio omits it when falsy
    while True:
        resp = await client.room_messages(room, start=token, limit=limit)
        if isinstance(resp, RoomMessagesError):
            raise RuntimeError(f"/messages failed after {pages} pages: {resp.status_code} {resp.message}")
        pages += 1
        events += len(resp.chunk)
        if not resp.chunk or not resp.end:
            break
        token = resp.end
    return events, pages, time.perf_counter() - start


async def main(args: argparse.Namespace) -> int:
    # No E2E store (already the default without python-olm); max_timeouts=0 so a dead
    # server fails at once instead of nio's default endless retry with backoff.
    config = AsyncClientConfig(store_sync_tokens=False, encryption_enabled=False, max_timeouts=0)
    # nio concatenates homeserver + path: a trailing slash would give `//_matrix`.
    client = AsyncClient(args.homeserver.rstrip("/"), user=args.user, device_id=args.device, config=config)
    client.access_token = args.token
    client.user_id = args.user
    client.device_id = args.device
    try:
        for _ in range(args.repeat):
            events, pages, seconds = await page_once(client, args.room, args.limit)
            print(json.dumps({"events": events, "pages": pages, "seconds": seconds}), flush=True)
    except (RuntimeError, ClientError, asyncio.TimeoutError) as err:
        print(f"nio peer: {err}", file=sys.stderr)
        return 1
    finally:
        await client.close()
    return 0


if __name__ == "__main__":
    # nio logs nothing per event for well-formed events; keep only errors so a
    # misbehaving mock cannot flood stderr and distort the timing.
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    sys.exit(asyncio.run(main(parse_args())))
