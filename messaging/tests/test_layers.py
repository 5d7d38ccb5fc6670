"""The recovering pub/sub layer against a real redis-server of the test's own, restarted
empty (the machine's shared Redis is never touched)."""

from __future__ import annotations

import asyncio

import pytest

from aiim_project.compat.channels_redis import queued
from aiim_project.core.layers import RESYNC_TYPE, RecoveringPubSubChannelLayer

pytestmark = pytest.mark.redis


class Listener:
    """Receives on a channel for the whole test: a receive cancelled by a timeout would make
    the layer drop the channel (it takes that for the consumer exiting)."""

    def __init__(self, layer, channel: str):
        self.types: list[str] = []
        self.task = asyncio.create_task(self._run(layer, channel))

    async def _run(self, layer, channel: str) -> None:
        while True:
            message = await layer.receive(channel)
            self.types.append(message["type"])

    def take(self) -> list[str]:
        got, self.types = self.types, []
        return got


def test_after_a_redis_restart_every_channel_is_told_to_resync_and_publishing_works(redis_server):
    async def scenario():
        layer = RecoveringPubSubChannelLayer(hosts=[redis_server.url], prefix="t")
        channels = [await layer.new_channel(), await layer.new_channel()]
        for channel in channels:
            await layer.group_add("g", channel)
        listeners = [Listener(layer, channel) for channel in channels]
        await layer.group_send("g", {"type": "before"})
        await asyncio.sleep(0.5)
        before = [listener.take() for listener in listeners]
        redis_server.restart()
        # The first publish after the restart meets a stale pooled connection: retried.
        await layer.group_send("g", {"type": "right.after"})
        await asyncio.sleep(2)
        after = [listener.take() for listener in listeners]
        await layer.group_send("g", {"type": "later"})
        await asyncio.sleep(0.5)
        later = [listener.take() for listener in listeners]
        for listener in listeners:
            listener.task.cancel()
        await layer.flush()
        return before, after, later

    before, after, later = asyncio.run(scenario())
    assert before == [["before"], ["before"]]
    # An event published before the re-subscription may be lost; the resync says so.
    for got in after:
        assert RESYNC_TYPE in got, got
    assert later == [["later"], ["later"]]


def test_group_send_raises_when_redis_stays_down(redis_server):
    async def scenario():
        layer = RecoveringPubSubChannelLayer(hosts=[redis_server.url], prefix="t")
        await layer.group_send("g", {"type": "x"})
        redis_server.kill()
        try:
            await layer.group_send("g", {"type": "x"})
        finally:
            redis_server.start()
            await layer.flush()

    from redis.exceptions import ConnectionError

    with pytest.raises(ConnectionError):
        asyncio.run(scenario())


def test_group_send_many_publishes_in_order_and_retries_after_a_redis_restart(redis_server):
    async def scenario():
        layer = RecoveringPubSubChannelLayer(hosts=[redis_server.url], prefix="t")
        channel = await layer.new_channel()
        for group in ("g1", "g2"):
            await layer.group_add(group, channel)
        listener = Listener(layer, channel)
        items = [(f"g{1 + k % 2}", {"type": f"m{k}"}) for k in range(40)] + [("not-subscribed", {"type": "nobody"})]
        await layer.group_send_many(items)
        await asyncio.sleep(0.5)
        first = listener.take()
        redis_server.restart()
        # The first pipeline after the restart meets a stale pooled connection: retried, no
        # error (what it carried may be lost before the re-subscription; the resync says so).
        await layer.group_send_many([("g1", {"type": "right.after"})])
        await asyncio.sleep(2)
        after = listener.take()
        await layer.group_send_many([("g2", {"type": "later1"}), ("g1", {"type": "later2"})])
        await asyncio.sleep(0.5)
        later = listener.take()
        listener.task.cancel()
        await layer.flush()
        return first, after, later

    first, after, later = asyncio.run(scenario())
    assert first == [f"m{k}" for k in range(40)]
    assert RESYNC_TYPE in after
    assert later == ["later1", "later2"]


def test_receive_many_hands_over_a_queued_burst_in_order_within_its_limit(redis_server):
    async def scenario():
        layer = RecoveringPubSubChannelLayer(hosts=[redis_server.url], prefix="t")
        channel = await layer.new_channel()
        await layer.group_add("g", channel)
        await layer.group_send_many([("g", {"type": f"m{k}"}) for k in range(30)])
        for _ in range(100):  # until the whole burst is in this process's queue
            if queued(layer, channel) == 30:
                break
            await asyncio.sleep(0.01)
        first = await layer.receive_many(channel, 12)
        rest = await layer.receive_many(channel, 100)
        await layer.flush()
        return [m["type"] for m in first], [m["type"] for m in rest]

    first, rest = asyncio.run(scenario())
    assert first == [f"m{k}" for k in range(12)]
    assert rest == [f"m{k}" for k in range(12, 30)]


def test_an_error_reply_on_the_subscriber_connection_loses_no_event(redis_server):
    async def scenario():
        layer = RecoveringPubSubChannelLayer(hosts=[redis_server.url], prefix="t")
        channel = await layer.new_channel()
        await layer.group_add("g", channel)
        listener = Listener(layer, channel)
        pubsub = layer._get_layer()._shards[0]._pubsub
        await layer.group_send_many([("g", {"type": f"before{k}"}) for k in range(20)])
        await pubsub.connection.send_command("NO-SUCH-COMMAND")  # Redis answers -ERR on this connection
        await layer.group_send_many([("g", {"type": f"after{k}"}) for k in range(20)])
        await asyncio.sleep(1)
        listener.task.cancel()
        await layer.flush()
        return listener.take()

    got = asyncio.run(scenario())
    assert got == [f"before{k}" for k in range(20)] + [f"after{k}" for k in range(20)]
