"""Churn soak: N connect / subscribe(since_seq) / disconnect cycles against a running AIIM,
then what is left behind (tests/reliability/test_churn.py runs 1,000 in the suite).

    JWT_SECRET=<the server's> python bench/churn.py --url http://127.0.0.1:8083 --pid <daphne pid>

Reports RSS and open sockets of the server process (with --pid, same machine) after a
warm-up round and after the measured cycles, and the live-connection gauge from /metrics.
Conversations are created over REST for users churn-u0..u49 of tenant "bench-churn".
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

from aiim_project.core.auth import mint_token  # noqa: E402
from tests.reliability.support import churn, metric_value, open_sockets, rss_kb  # noqa: E402
from tests.support.http import http  # noqa: E402


class Target:
    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.ws_url = self.url.replace("http", "ws", 1) + "/api/aiim/ws"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://127.0.0.1:8083")
    parser.add_argument("--pid", type=int, help="the server's pid, for RSS and sockets")
    parser.add_argument("--cycles", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()

    target = Target(args.url)
    users = [f"churn-u{i}" for i in range(50)]
    tokens = [mint_token(user_id=u, tenant="bench-churn", ttl=3600) for u in users]
    ids = []
    for i in range(5):
        reply = http(target.url, "POST", "/api/aiim/conversations", tokens[i], {"type": "group", "member_ids": users})
        assert reply.status == 201, reply.body
        ids.append(reply.body["conversation_id"])

    def sample() -> dict:
        out: dict = {"ws_connections": metric_value(target.url, "aiim_ws_connections")}
        if args.pid:
            out.update(rss_mb=round(rss_kb(args.pid) / 1024, 1), sockets=open_sockets(args.pid))
        return out

    async def run() -> dict:
        warm_failures = await churn(target, tokens, ids, args.warmup, args.concurrency)
        await asyncio.sleep(1)
        before = sample()
        started = time.monotonic()
        failures = await churn(target, tokens, ids, args.cycles, args.concurrency)
        elapsed = time.monotonic() - started
        await asyncio.sleep(1)
        return {
            "cycles": args.cycles,
            "concurrency": args.concurrency,
            "cycles_per_sec": round(args.cycles / elapsed, 1),
            "failures": len(failures) + len(warm_failures),
            "before": before,
            "after": sample(),
        }

    print(json.dumps(asyncio.run(run()), indent=2))


if __name__ == "__main__":
    main()
