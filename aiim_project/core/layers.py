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

from aiim_project.compat.channels_redis import ResubscribingPubSubLayer, local_queues

from .errors import dependency_error_types

RESYNC_TYPE = "aiim.resync"


class RecoveringPubSubChannelLayer(ResubscribingPubSubLayer):
    lost_errors = dependency_error_types()

    def on_resubscribed(self, loop_layer) -> None:
        """Queue a resync for every channel of this process (each is one consumer)."""
        data = loop_layer.channel_layer.serialize({"type": RESYNC_TYPE})
        for queue in local_queues(loop_layer).values():
            queue.put_nowait(data)

    async def group_send(self, group: str, message: dict) -> None:
        try:
            await self._get_layer().group_send(group, message)
        except dependency_error_types():
            # A stale pooled connection (Redis restarted) fails once and is dropped; a
            # duplicate, if the first try did reach Redis, is dropped by seq downstream.
            await self._get_layer().group_send(group, message)
