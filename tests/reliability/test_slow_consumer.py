"""A subscriber that stops reading must not make the server buffer without bound, nor slow
anyone else down: it is cut off once its send buffer passes WS_SEND_BUFFER_BYTES."""

from __future__ import annotations

import asyncio
import statistics
import time

import pytest

from tests.support.http import http
from tests.support.websocket import ws_open, ws_recv, ws_request

from .support import StalledClient, created_seqs, production_env, rss_kb

pytestmark = pytest.mark.e2e

CONTENT = "x" * 60_000
BATCH = 100  # messages of the warm-up and the baseline phase
STALLED = 200  # messages while a subscriber is stalled: 11 MB of events
STALLED_MB = STALLED * len(CONTENT) / 2**20


async def send_batch(server, token, conversation_id: str, bob, start: int, count: int = BATCH) -> list[float]:
    """Alice sends `count` messages; returns Bob's lag (ack to event) for each."""
    alice = await ws_open(server.ws_url, token("alice"))
    acked_at: dict[int, float] = {}
    lags: list[float] = []

    async def read_bob():
        while len(lags) < count:
            frame = await ws_recv(bob, 30)
            for seq in created_seqs([frame], conversation_id):
                while seq not in acked_at:  # the event may beat the ack back to alice
                    await asyncio.sleep(0.001)
                lags.append(time.monotonic() - acked_at[seq])

    reader = asyncio.create_task(read_bob())
    for i in range(start, start + count):
        ack = await ws_request(alice, {"type": "send_msg", "conversation_id": conversation_id, "content": CONTENT, "client_msg_id": f"m{i}"})
        assert ack["type"] == "ack", ack
        acked_at[ack["seq"]] = time.monotonic()
    await asyncio.wait_for(reader, 60)
    await alice.close()
    return lags


def test_stalled_subscriber_is_cut_off_and_does_not_slow_others(daphne, make_conversation, token, settings):
    conversation = make_conversation("alice", others=("bob", "carol"))
    server = daphne(1, WS_SEND_BUFFER_BYTES=str(1024 * 1024), **production_env(settings.JWT_SECRET))[0]

    async def scenario():
        bob = await ws_open(server.ws_url, token("bob"))
        assert (await ws_request(bob, {"type": "subscribe", "conversation_id": conversation.id}))["type"] == "subscribed"
        # Warm up, then the baseline: nobody is stalled.
        await send_batch(server, token, conversation.id, bob, 0)
        baseline = await send_batch(server, token, conversation.id, bob, BATCH)
        rss_before = rss_kb(server.pid)

        carol = StalledClient(server.port, token("carol"))
        carol.send({"type": "subscribe", "conversation_id": conversation.id})
        await asyncio.sleep(0.3)
        stalled = await send_batch(server, token, conversation.id, bob, 2 * BATCH, STALLED)
        rss_after = rss_kb(server.pid)
        outcome = await asyncio.to_thread(carol.drain_until_closed, 10)
        carol.close()
        await bob.close()
        return baseline, stalled, rss_before, rss_after, outcome

    baseline, stalled, rss_before, rss_after, outcome = asyncio.run(scenario())
    how, code, frames = outcome
    growth_mb = (rss_after - rss_before) / 1024
    ratio = statistics.median(stalled) / max(statistics.median(baseline), 0.001)
    print(
        f"slow consumer: {how} {code} after {frames} frames; RSS +{growth_mb:.1f} MB for "
        f"{STALLED_MB:.1f} MB of events; bob's median lag {statistics.median(baseline) * 1000:.1f} ms "
        f"-> {statistics.median(stalled) * 1000:.1f} ms"
    )
    # Cut off: a 4413 close frame, or (if it never reads again) a dropped socket.
    assert how in ("close", "eof", "reset")
    if how == "close":
        assert code == 4413, code
    # The server did not keep the stalled client's share of the traffic in memory (without
    # the limit it grows by about the whole volume).
    assert growth_mb < STALLED_MB / 4, growth_mb
    # Bob was not held back (a generous bound on a ratio, not a time).
    assert ratio < 5, ratio
    assert http(server.url, "GET", "/health/live").status == 200
