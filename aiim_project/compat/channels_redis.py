"""channels-redis (and Channels' in-memory layer): replaces each shard's `_do_receiving` through
`_get_layer` to report a re-subscription and to note which subscriptions Redis confirmed;
reads the per-channel `channels` queues; publishes several group messages in one pipeline per
shard; adds and discards several groups with one SUBSCRIBE / UNSUBSCRIBE per shard
(docs/internals.md, "compat/channels_redis.py").
"""

from __future__ import annotations

import asyncio
import logging
import types
from collections.abc import Callable
from typing import Any

from channels_redis.pubsub import RedisPubSubChannelLayer

from . import redis_py

logger = logging.getLogger("aiim.layers")

RECONNECT_PAUSE = 0.2
# Buffered replies parsed per turn of the receive loop before it yields to the event loop.
DRAIN_LIMIT = 500


class _Confirmations:
    """Which channels of a shard Redis has confirmed subscribing to. A channel is confirmed
    once every SUBSCRIBE / UNSUBSCRIBE sent for it has its reply and the last was a
    SUBSCRIBE: a reply to an older command never confirms a newer one."""

    def __init__(self) -> None:
        self.outstanding: dict[str, int] = {}
        self.confirmed: set[str] = set()

    def sent(self, channels: list[str]) -> None:
        for channel in channels:
            self.outstanding[channel] = self.outstanding.get(channel, 0) + 1
            self.confirmed.discard(channel)

    def replied(self, kind: str, channel: str) -> None:
        left = self.outstanding.get(channel, 0) - 1
        if left > 0:
            self.outstanding[channel] = left
            return
        self.outstanding.pop(channel, None)
        if kind == "subscribe":
            self.confirmed.add(channel)
        else:
            self.confirmed.discard(channel)

    def lost(self) -> None:
        self.outstanding.clear()
        self.confirmed.clear()


def _confirmations(shard) -> _Confirmations:
    state = getattr(shard, "_aiim_confirmations", None)
    if state is None:
        state = shard._aiim_confirmations = _Confirmations()
    return state


async def _do_receiving(shard, on_resubscribed: Callable[[Any], None], lost_errors: tuple[type[BaseException], ...]) -> None:
    """channels_redis' receive loop, plus `on_resubscribed(loop_layer)` once it is back, and
    the channels whose subscription Redis has confirmed (`is_confirmed`)."""
    lost = False
    confirmations = _confirmations(shard)
    while True:
        try:
            if shard._pubsub and shard._pubsub.subscribed:
                # Returns (a message or None) only once connected and re-subscribed.
                message = await shard._pubsub.get_message(ignore_subscribe_messages=False, timeout=0.1)
                if lost:
                    lost = False
                    logger.warning("channel layer re-subscribed to Redis; resyncing subscriptions")
                    on_resubscribed(shard.channel_layer)
                if message is None:
                    continue
                _handle(shard, confirmations, message)
                # The rest of a burst is already read: parsed without get_message's wrapper.
                replies, error = await redis_py.read_buffered(shard._pubsub, DRAIN_LIMIT)
                await _handle_replies(shard, confirmations, replies)
                if error is not None:
                    raise error
            else:
                await asyncio.sleep(0.1)
        except (TimeoutError, asyncio.CancelledError, GeneratorExit):
            raise
        except lost_errors as exc:
            if not lost:
                logger.warning("channel layer lost its Redis subscription: %s", type(exc).__name__)
            lost = True
            confirmations.lost()  # confirmed again as the client re-subscribes
            await asyncio.sleep(RECONNECT_PAUSE)
        except Exception:
            # e.g. the first subscribe has not connected yet: nothing was lost.
            logger.exception("unexpected error in the channel layer's receive loop")
            await asyncio.sleep(RECONNECT_PAUSE)


def _handle(shard, confirmations: _Confirmations, message: dict) -> None:
    kind = message["type"]
    if kind == "message":
        shard._receive_message(message)
    elif kind in ("subscribe", "unsubscribe"):
        confirmations.replied(kind, _name(message["channel"]))


async def _handle_replies(shard, confirmations: _Confirmations, replies: list[Any]) -> None:
    """Raw replies from `redis_py.read_buffered`, as `_handle` takes get_message's."""
    for reply in replies:
        if isinstance(reply, list) and len(reply) == 3 and reply[0] in (b"message", "message"):
            shard._receive_message({"channel": reply[1], "data": reply[2]})
        elif isinstance(reply, Exception):  # an error reply: get_message would raise it
            logger.warning("error reply on the pub/sub connection: %s", type(reply).__name__)
        else:  # through redis-py, which keeps its books of (un)subscribe replies
            message = await shard._pubsub.handle_message(reply, ignore_subscribe_messages=False)
            if message is not None:
                _handle(shard, confirmations, message)


class ResubscribingPubSubLayer(RedisPubSubChannelLayer):
    """The pub/sub layer, calling `on_resubscribed(loop_layer)` when a shard's subscription
    comes back after one of `lost_errors`."""

    lost_errors: tuple[type[BaseException], ...] = (ConnectionError,)

    def on_resubscribed(self, loop_layer: Any) -> None:
        pass

    def _get_layer(self):
        loop_layer = super()._get_layer()
        for shard in loop_layer._shards:
            if shard._receive_task is None and not getattr(shard, "_recovering", False):
                shard._do_receiving = types.MethodType(
                    lambda shard: _do_receiving(shard, self.on_resubscribed, self.lost_errors), shard
                )
                shard._recovering = True
        return loop_layer


async def group_send_many(loop_layer: Any, items: list[tuple[str, dict]]) -> None:
    """`group_send` of each (group, message), in order, as one Redis pipeline per shard: one
    round trip instead of one per PUBLISH. Same channel names and serialization as
    `RedisPubSubLoopLayer.group_send`; a group's messages keep their order (one shard each).
    Not under the shard's lock, which only guards its subscriptions (a PUBLISH never needed
    it: the client's pool gives it its own connection)."""
    by_shard: dict[Any, list[tuple[str, bytes]]] = {}
    for group, message in items:
        channel = loop_layer._get_group_channel_name(group)
        shard = loop_layer._get_shard(channel)
        by_shard.setdefault(shard, []).append((channel, loop_layer.channel_layer.serialize(message)))
    for shard, publishes in by_shard.items():
        shard._ensure_redis()
        async with shard._redis.pipeline(transaction=False) as pipe:
            for channel, data in publishes:
                pipe.publish(channel, data)
            await pipe.execute()


def _name(channel: str | bytes) -> str:
    return channel.decode() if isinstance(channel, bytes) else channel


def is_confirmed(loop_layer: Any, group: str) -> bool:
    """Redis has confirmed this process's subscription to `group`: whatever is published to
    it from now on reaches this process."""
    channel = loop_layer._get_group_channel_name(group)
    return channel in _confirmations(loop_layer._get_shard(channel)).confirmed


async def group_add_many(loop_layer: Any, groups: list[str], channel: str) -> None:
    """`group_add(group, channel)` for each group, with one SUBSCRIBE per shard: the layer's
    `group_add` takes the shard's lock for one channel at a time, so a storm of joins became a
    chain of lock hand-overs, one turn of the busy event loop each (bench/RESULTS.md, issue 21)."""
    if channel not in loop_layer.channels:
        raise RuntimeError(f"group_add_many: channel {channel!r} is not a channel of this process")
    by_shard: dict[Any, list[str]] = {}
    for group in groups:
        group_channel = loop_layer._get_group_channel_name(group)
        loop_layer.groups.setdefault(group_channel, set()).add(channel)
        by_shard.setdefault(loop_layer._get_shard(group_channel), []).append(group_channel)
    await _change_subscriptions(by_shard, subscribe=True)


async def group_discard_many(loop_layer: Any, groups: list[str], channel: str) -> None:
    """`group_discard(group, channel)` for each group, with one UNSUBSCRIBE per shard."""
    by_shard: dict[Any, list[str]] = {}
    for group in groups:
        group_channel = loop_layer._get_group_channel_name(group)
        members = loop_layer.groups.get(group_channel)
        if not members or channel not in members:
            continue
        members.discard(channel)
        if not members:
            del loop_layer.groups[group_channel]
            by_shard.setdefault(loop_layer._get_shard(group_channel), []).append(group_channel)
    await _change_subscriptions(by_shard, subscribe=False)


async def _change_subscriptions(by_shard: dict[Any, list[str]], *, subscribe: bool) -> None:
    """One SUBSCRIBE (or UNSUBSCRIBE) per shard for the channels it does not (or does) have,
    under the shard's lock, as its `subscribe` / `unsubscribe` do for one channel."""
    for shard, names in by_shard.items():
        async with shard._lock:
            todo = list(dict.fromkeys(n for n in names if (n in shard._subscribed_to) != subscribe))
            if not todo:
                continue
            shard._ensure_redis()
            shard._ensure_receiver()
            _confirmations(shard).sent(todo)
            if subscribe:
                await shard._pubsub.subscribe(*todo)
                shard._subscribed_to.update(todo)
            else:
                await shard._pubsub.unsubscribe(*todo)
                shard._subscribed_to.difference_update(todo)


async def receive_many(loop_layer: Any, channel: str, limit: int) -> list[dict]:
    """`receive(channel)`, then up to `limit - 1` more messages already queued behind it,
    taken from the channel's local queue and deserialized as `receive` does: one pass of the
    layer's per-call machinery (`_async_proxy`, `_get_layer`) for a whole burst."""
    messages = [await loop_layer.receive(channel)]
    queue = loop_layer.channels.get(channel)
    while queue is not None and len(messages) < limit and not queue.empty():
        messages.append(loop_layer.channel_layer.deserialize(queue.get_nowait()))
    return messages


def local_queues(loop_layer: Any) -> dict[str, asyncio.Queue]:
    """The per-channel queues of a per-loop layer (a serialized message each)."""
    return loop_layer.channels


def queued(layer: Any, channel: str | None) -> int:
    """Messages the layer holds in this process for `channel` that nobody took yet."""
    inner = layer._get_layer() if hasattr(layer, "_get_layer") else layer
    queue = getattr(inner, "channels", {}).get(channel)
    return queue.qsize() if queue is not None else 0
