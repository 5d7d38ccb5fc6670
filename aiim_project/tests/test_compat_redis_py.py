"""compat.redis_py.read_buffered against a redis-server of the test's own: the rest of a burst
comes out in order, and a connection that dies mid-burst still gives what it had read and is
reconnected (re-subscribed) by the next get_message."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from aiim_project.compat.redis_py import read_buffered

pytestmark = pytest.mark.redis


async def _subscribed(url: str) -> tuple[aioredis.Redis, aioredis.client.PubSub]:
    client = aioredis.Redis.from_url(url)
    pubsub = client.pubsub()
    await pubsub.subscribe("burst")
    assert (await pubsub.get_message(timeout=2))["type"] == "subscribe"
    return client, pubsub


async def _publish(url: str, payloads: list[bytes]) -> None:
    publisher = aioredis.Redis.from_url(url)
    async with publisher.pipeline(transaction=False) as pipe:
        for payload in payloads:
            pipe.publish("burst", payload)
        await pipe.execute()
    await publisher.aclose()


def test_the_rest_of_a_burst_is_read_from_the_buffer_in_order(redis_server):
    async def scenario():
        client, pubsub = await _subscribed(redis_server.url)
        payloads = [f"event-{k}".encode() for k in range(50)]
        await _publish(redis_server.url, payloads)
        await asyncio.sleep(0.2)  # the whole burst is on the socket: one read takes it
        first = await pubsub.get_message(timeout=2)
        rest, error = await read_buffered(pubsub, 1000)
        nothing_left = await read_buffered(pubsub, 1000)
        await client.aclose()
        return first, rest, error, nothing_left

    first, rest, error, nothing_left = asyncio.run(scenario())
    assert first["data"] == b"event-0"
    assert error is None
    assert [bytes(r[0]) for r in rest] == [b"message"] * 49
    assert [r[2] for r in rest] == [f"event-{k}".encode() for k in range(1, 50)]
    assert nothing_left == ([], None)


def test_a_limit_leaves_the_rest_for_the_next_read(redis_server):
    async def scenario():
        client, pubsub = await _subscribed(redis_server.url)
        await _publish(redis_server.url, [f"e{k}".encode() for k in range(10)])
        await asyncio.sleep(0.2)
        await pubsub.get_message(timeout=2)
        part, _ = await read_buffered(pubsub, 4)
        rest, _ = await read_buffered(pubsub, 100)
        await client.aclose()
        return [r[2] for r in part], [r[2] for r in rest]

    part, rest = asyncio.run(scenario())
    assert part == [b"e1", b"e2", b"e3", b"e4"]
    assert rest == [f"e{k}".encode() for k in range(5, 10)]


def test_a_connection_killed_mid_burst_gives_what_it_read_then_reconnects(redis_server):
    async def scenario():
        client, pubsub = await _subscribed(redis_server.url)
        await _publish(redis_server.url, [b"a", b"b", b"c"])
        await asyncio.sleep(0.2)
        first = await pubsub.get_message(timeout=2)
        redis_server.client().client_kill_filter(_type="pubsub")
        await asyncio.sleep(0.2)  # the close is on the socket behind the two buffered events
        rest, error = await read_buffered(pubsub, 100)
        connected = pubsub.connection.is_connected
        # The next get_message reconnects and subscribes again, as after any lost read.
        await pubsub.get_message(timeout=1)
        await _publish(redis_server.url, [b"after"])
        later = None
        for _ in range(20):
            later = await pubsub.get_message(timeout=0.5)
            if later is not None and later["type"] == "message":
                break
        await client.aclose()
        return first, [r[2] for r in rest], error, connected, later

    first, rest, error, connected, later = asyncio.run(scenario())
    assert first["data"] == b"a"
    assert rest == [b"b", b"c"]
    assert error is not None and "lost" in str(error)
    assert connected is False
    assert later is not None and later["data"] == b"after"
