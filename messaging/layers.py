"""The Redis pub/sub channel layer, made to survive a Redis restart without losing the
newest messages.

Redis pub/sub keeps nothing: an event published while a process's subscriber connection is
down, or before it has re-subscribed, is gone. Ordered delivery reads a lost event back from
the database as soon as a later event reveals the gap, but the newest message of a
conversation has no later event. Two windows lose it after a Redis restart:

* the publisher's pooled connection is stale: the first PUBLISH fails. `group_send` retries
  once, on a fresh connection;
* the subscriber's receive loop is reconnecting. When it is subscribed again the layer puts
  a `aiim.resync` message in every local channel, and the gateway re-reads the tail of each
  subscription from the database.
"""

from __future__ import annotations

import asyncio
import logging
import types

from channels_redis.pubsub import RedisPubSubChannelLayer

from .errors import dependency_error_types

logger = logging.getLogger("aiim.layers")

RESYNC_TYPE = "aiim.resync"
RECONNECT_PAUSE = 0.2


async def _do_receiving(shard) -> None:
    """channels_redis' receive loop, plus a resync once the connection is back."""
    lost = False
    while True:
        try:
            if shard._pubsub and shard._pubsub.subscribed:
                # Returns (a message or None) only once connected and re-subscribed.
                message = await shard._pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
                if lost:
                    lost = False
                    logger.warning("channel layer re-subscribed to Redis; resyncing subscriptions")
                    _resync_all(shard.channel_layer)
                shard._receive_message(message)
            else:
                await asyncio.sleep(0.1)
        except (asyncio.CancelledError, asyncio.TimeoutError, GeneratorExit):
            raise
        except dependency_error_types() as exc:
            if not lost:
                logger.warning("channel layer lost its Redis subscription: %s", type(exc).__name__)
            lost = True
            await asyncio.sleep(RECONNECT_PAUSE)
        except Exception:
            # e.g. the first subscribe has not connected yet: nothing was lost.
            logger.exception("unexpected error in the channel layer's receive loop")
            await asyncio.sleep(RECONNECT_PAUSE)


def _resync_all(loop_layer) -> None:
    """Queue a resync for every channel of this process (each is one consumer)."""
    data = loop_layer.channel_layer.serialize({"type": RESYNC_TYPE})
    for queue in loop_layer.channels.values():
        queue.put_nowait(data)


class RecoveringPubSubChannelLayer(RedisPubSubChannelLayer):
    def _get_layer(self):
        loop_layer = super()._get_layer()
        for shard in loop_layer._shards:
            if shard._receive_task is None and not getattr(shard, "_recovering", False):
                shard._do_receiving = types.MethodType(_do_receiving, shard)
                shard._recovering = True
        return loop_layer

    async def group_send(self, group: str, message: dict) -> None:
        try:
            await self._get_layer().group_send(group, message)
        except dependency_error_types():
            # A stale pooled connection (Redis restarted) fails once and is dropped; a
            # duplicate, if the first try did reach Redis, is dropped by seq downstream.
            await self._get_layer().group_send(group, message)
