"""Floods: the per-user rate limit holds across two processes (its windows live in Redis),
over REST and WebSocket alike, and a flooding client does not slow anyone else down."""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time

import pytest

from tests.support.http import ahttp
from tests.support.websocket import ws_open, ws_recv, ws_request, ws_send

pytestmark = [pytest.mark.redis, pytest.mark.e2e]

LIMIT = 5


async def at_window_start() -> None:
    """Start a burst just after a second boundary, so it spans as few windows as possible."""
    await asyncio.sleep(1.02 - time.time() % 1.0)


def windows(started: float, ended: float) -> int:
    return int(ended) - int(started) + 1


def test_rest_rate_limit_holds_across_two_processes(daphne, make_conversation, token):
    conversation = make_conversation("alice")
    servers = daphne(2, RATE_LIMIT_PER_SEC=str(LIMIT))

    async def burst():
        await at_window_start()
        started = time.time()
        replies = await asyncio.gather(*(
            ahttp(servers[i % 2].url, "POST", "/api/aiim/messages", token("alice"), {"conversation_id": conversation.id, "content": f"{i}"})
            for i in range(30)
        ))
        return replies, windows(started, time.time())

    replies, spanned = asyncio.run(burst())
    accepted = [r for r in replies if r.status == 201]
    limited = [r for r in replies if r.status == 429]
    assert len(accepted) + len(limited) == len(replies), [(r.status, r.body) for r in replies if r.status not in (201, 429)]
    assert 1 <= len(accepted) <= LIMIT * spanned, (len(accepted), spanned)
    for r in limited:
        assert r.body["code"] == "rate_limited" and int(r.headers["retry-after"]) >= 1


def test_ws_rate_limit_holds_across_two_processes(daphne, make_conversation, token):
    conversation = make_conversation("alice")
    servers = daphne(2, RATE_LIMIT_PER_SEC=str(LIMIT))

    async def burst():
        sockets = [await ws_open(s.ws_url, token("alice")) for s in servers]
        await at_window_start()
        started = time.time()
        for i in range(15):
            for n, ws in enumerate(sockets):
                await ws_send(ws, {"type": "send_msg", "conversation_id": conversation.id, "content": "x", "req_id": f"{n}-{i}"})
        answers = []
        for ws in sockets:
            while len([a for a in answers if a["req_id"].startswith(f"{sockets.index(ws)}-")]) < 15:
                frame = await ws_recv(ws, 10)
                if frame.get("req_id"):
                    answers.append(frame)
        ended = time.time()
        for ws in sockets:
            await ws.close()
        return answers, windows(started, ended)

    answers, spanned = asyncio.run(burst())
    acks = [a for a in answers if a["type"] == "ack"]
    limited = [a for a in answers if a["type"] == "error" and a["code"] == "rate_limited"]
    assert len(acks) + len(limited) == 30, answers
    assert 1 <= len(acks) <= LIMIT * spanned, (len(acks), spanned)


FLOODER = """
import json, sys, time
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect
url, token, conversation_id = sys.argv[1:4]
frame = json.dumps({"type": "send_msg", "conversation_id": conversation_id, "content": "spam"})
sent, code, deadline = 0, None, time.monotonic() + 10
with connect(f"{url}?token={token}", max_queue=None) as ws:
    try:
        while time.monotonic() < deadline:
            ws.send(frame)
            sent += 1
    except ConnectionClosed as closed:
        code = closed.rcvd.code if closed.rcvd else None
print(json.dumps([code, sent]))
"""


def test_a_flooding_client_does_not_slow_the_others(daphne, make_conversation, token):
    """Bob's send latency with and without Mallory flooding the same process (generous
    ratio bound, not a time); Mallory is closed with 4429 for ignoring rate_limited."""
    conversation = make_conversation("bob", others=("carol",))
    noisy = make_conversation("mallory")
    server = daphne(1, RATE_LIMIT_PER_SEC="20")[0]

    async def bob_latencies(n: int = 15) -> list[float]:
        ws = await ws_open(server.ws_url, token("bob"))
        out = []
        for i in range(n):
            started = time.monotonic()
            ack = await ws_request(ws, {"type": "send_msg", "conversation_id": conversation.id, "content": "hi"})
            assert ack["type"] == "ack", ack
            out.append(time.monotonic() - started)
            await asyncio.sleep(0.06)  # stays under bob's own limit
        await ws.close()
        return out

    async def scenario():
        baseline = await bob_latencies()
        # Mallory floods from her own process, so her CPU is not taken from Bob's client.
        flooder = await asyncio.create_subprocess_exec(
            sys.executable, "-c", FLOODER, server.ws_url, token("mallory"), noisy.id, stdout=asyncio.subprocess.PIPE
        )
        await asyncio.sleep(0.3)
        during = await bob_latencies()
        out, _ = await asyncio.wait_for(flooder.communicate(), 30)
        return baseline, during, json.loads(out)

    baseline, during, (mallory_code, sent) = asyncio.run(scenario())
    ratio = statistics.median(during) / statistics.median(baseline)
    print(f"flood: mallory sent {sent} frames, closed {mallory_code}; bob median {statistics.median(baseline) * 1000:.1f} -> {statistics.median(during) * 1000:.1f} ms")
    assert mallory_code == 4429
    assert ratio < 5, ratio
