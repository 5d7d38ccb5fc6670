"""Connect / subscribe / disconnect churn leaves nothing behind: no growth in server memory,
open sockets, live-connection gauge, channel-layer subscriptions or presence entries.

The suite measures three rounds of 1,000 cycles (concurrency 50) after a warm-up round of as many;
`bench/churn.py` runs the 5,000-cycle soak."""

from __future__ import annotations

import asyncio

import pytest
from django.conf import settings as django_settings

from aiim_project.core import redis as aiim_redis

from .support import churn, metric_value, open_sockets, production_env, rss_kb

pytestmark = pytest.mark.e2e

CYCLES = 1_000
ROUNDS = 3
USERS = 50


def redis_leftovers() -> tuple[int, int]:
    """(channel-layer pub/sub channels of this run's prefix, presence entries)."""
    client = aiim_redis.sync_client()
    channels = len(client.pubsub_channels(f"{django_settings.CHANNEL_LAYER_PREFIX}*"))
    entries = sum(client.zcard(k) for k in client.scan_iter("aiim:presence:*"))
    return channels, entries


def test_connect_subscribe_disconnect_churn_leaves_nothing_behind(daphne, make_conversation, send, token, settings):
    users = [f"u{i}" for i in range(USERS)]
    conversations = [make_conversation(users[i], others=tuple(users[:i] + users[i + 1:])) for i in range(5)]
    for c in conversations:
        send(c, users[0], "history")
    tokens = [token(u) for u in users]
    ids = [c.id for c in conversations]
    server = daphne(1, **production_env(settings.JWT_SECRET))[0]

    async def scenario():
        # The first round grows the process to its working size (thread pools, database
        # pool, allocator arenas: about 10 MB at concurrency 50). A pool may still open a few
        # more connections later, and the allocator may take a few MB more over the next two
        # rounds on a slow machine, so three rounds are measured: a leak grows every one.
        failures = await churn(server, tokens, ids, CYCLES)
        samples = []
        for _ in range(ROUNDS):
            await asyncio.sleep(1.0)
            samples.append((rss_kb(server.pid), open_sockets(server.pid)))
            failures += await churn(server, tokens, ids, CYCLES)
        await asyncio.sleep(1.0)
        samples.append((rss_kb(server.pid), open_sockets(server.pid)))
        return failures, samples

    failures, samples = asyncio.run(scenario())
    growth_mb = [(after[0] - before[0]) / 1024 for before, after in zip(samples, samples[1:])]
    sockets = [n for _, n in samples]
    print(f"churn: {ROUNDS} x {CYCLES} cycles; RSS growth {[round(g, 1) for g in growth_mb]} MB; sockets {sockets}")
    assert not failures, failures[:5]
    assert min(growth_mb) < 4, growth_mb
    # The database and Redis pools may still grow towards the peak concurrency (50); a leak
    # of one socket per cycle would be 1,000.
    assert sockets[-1] <= sockets[0] + 50
    assert metric_value(server.url, "aiim_ws_connections") == 0
    if settings.REDIS_URL:
        # One pub/sub channel stays: the server process's hub (aiim_project/gateway/hub.py);
        # no group of a conversation or user, no presence entry.
        assert redis_leftovers() == (1, 0)
