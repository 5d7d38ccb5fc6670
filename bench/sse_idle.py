"""Idle streams per process: N conversation-event SSE streams, then N subscribed WebSockets,
against a running AIIM; the server's RSS, threads and database connections for each.

    JWT_SECRET=<the server's> python bench/sse_idle.py --url http://127.0.0.1:8083 --pid <daphne pid> [--n 1000]

Each SSE stream is a raw socket that sent its GET and read its `subscribed` event (so the
server has joined the hub and read the snapshot), then idles. Each WebSocket connects and
subscribes to the same conversations, then idles. Measured after a warm-up round (the first
streams pay for imports and caches), so the numbers are the cost of one more idle stream.
Prints one JSON object; bench/RESULTS.md records runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aiim_project.settings")

import django  # noqa: E402

django.setup()

from websockets.asyncio.client import connect  # noqa: E402

from aiim_project.core.auth import mint_token  # noqa: E402
from tests.reliability.support import http, rss_kb  # noqa: E402

TENANT = "bench-sse"
PG_PORT_HEX = ":1538"  # 5432


def threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("Threads:"))


def db_connections(pid: int) -> int:
    """The process's TCP connections to port 5432 (PostgreSQL; 0 on SQLite)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            for line in list(fh)[1:]:
                fields = line.split()
                if fields[2].endswith(PG_PORT_HEX) and fields[3] == "01" and fields[9] in inodes:
                    count += 1
    return count


def sample(pid: int) -> dict:
    return {"rss_kb": rss_kb(pid), "threads": threads(pid), "db_connections": db_connections(pid)}


async def open_sse(host: str, port: int, path: str) -> asyncio.StreamWriter:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n".encode())
    buf = b""
    while b"event: subscribed" not in buf:
        chunk = await asyncio.wait_for(reader.read(4096), 30)
        if not chunk:
            raise ConnectionError(buf[:300])
        buf += chunk
    writer._aiim_reader = reader  # keep the reader alive with the writer
    return writer


async def open_ws(ws_url: str, token: str, conversation_id: str):
    ws = await connect(f"{ws_url}?token={token}", max_size=None)
    await ws.send(json.dumps({"type": "subscribe", "conversation_id": conversation_id}))
    while json.loads(await asyncio.wait_for(ws.recv(), 30)).get("type") != "subscribed":
        pass
    return ws


async def gather_limited(factories, limit: int = 50) -> list:
    sem = asyncio.Semaphore(limit)

    async def run(factory):
        async with sem:
            return await factory()

    return await asyncio.gather(*(run(f) for f in factories))


async def measure(args) -> dict:
    url = args.url.rstrip("/")
    host, port = url.split("//", 1)[1].split(":")
    port = int(port)
    ws_url = url.replace("http", "ws", 1) + "/api/aiim/ws"
    users = [f"sse-u{i}" for i in range(20)]
    tokens = {u: mint_token(user_id=u, tenant=TENANT, ttl=24 * 3600) for u in users}
    conversations = []
    for i in range(10):
        reply = http(url, "POST", "/api/aiim/conversations", tokens[users[i]], {"type": "group", "member_ids": users})
        assert reply.status == 201, reply.body
        conversations.append(reply.body["conversation_id"])

    def sse_path(k: int) -> str:
        user = users[k % len(users)]
        return f"/api/aiim/conversations/{conversations[k % len(conversations)]}/events?token={tokens[user]}"

    out: dict = {"n": args.n, "kind": args.kind}
    # Warm-up: one round of each kind, closed again.
    warm = await gather_limited([lambda k=k: open_sse(host, port, sse_path(k)) for k in range(100)])
    for w in warm:
        w.close()
    warm_ws = await gather_limited([lambda k=k: open_ws(ws_url, tokens[users[k % 20]], conversations[k % 10]) for k in range(100)])
    for ws in warm_ws:
        await ws.close()
    await asyncio.sleep(2)

    if args.kind in ("sse", "both"):
        out["sse"] = await measure_sse(args, host, port, sse_path)
    if args.kind in ("ws", "both"):
        out["ws"] = await measure_ws(args, ws_url, [tokens[users[k % 20]] for k in range(args.n)], conversations)
    return out


async def measure_sse(args, host: str, port: int, sse_path) -> dict:
    before = sample(args.pid)
    started = time.monotonic()
    streams = await gather_limited([lambda k=k: open_sse(host, port, sse_path(k)) for k in range(args.n)])
    opened = round(time.monotonic() - started, 2)
    await asyncio.sleep(args.settle)
    during = sample(args.pid)
    out = {"open_seconds": opened, "before": before, "idle": during,
                  "rss_kb_per_stream": round((during["rss_kb"] - before["rss_kb"]) / args.n, 2),
                  "threads_added": during["threads"] - before["threads"],
                  "db_connections_added": during["db_connections"] - before["db_connections"]}
    for w in streams:
        w.close()
    await asyncio.sleep(3)
    return out


async def measure_ws(args, ws_url: str, tokens: list[str], conversations: list[str]) -> dict:
    before = sample(args.pid)
    started = time.monotonic()
    sockets = await gather_limited([lambda k=k: open_ws(ws_url, tokens[k], conversations[k % 10]) for k in range(args.n)])
    opened = round(time.monotonic() - started, 2)
    await asyncio.sleep(args.settle)
    during = sample(args.pid)
    out = {"open_seconds": opened, "before": before, "idle": during,
                 "rss_kb_per_connection": round((during["rss_kb"] - before["rss_kb"]) / args.n, 2),
                 "threads_added": during["threads"] - before["threads"],
                 "db_connections_added": during["db_connections"] - before["db_connections"]}
    for ws in sockets:
        await ws.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://127.0.0.1:8083")
    parser.add_argument("--pid", type=int, required=True, help="the server's pid (same machine)")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--kind", choices=["sse", "ws", "both"], default="both",
                        help="both: SSE then WebSocket in one process (the second reuses memory the first freed: "
                        "compare kinds on fresh processes)")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds idle before sampling")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args)), indent=2))


if __name__ == "__main__":
    main()
