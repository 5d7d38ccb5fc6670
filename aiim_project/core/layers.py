"""The Redis pub/sub channel layer, made to survive a Redis restart without losing the newest
messages: a failed PUBLISH is retried once, and a re-subscription sends `aiim.resync`
(docs/architecture.md, "Runtime details of the shared base").
"""

from __future__ import annotations

from aiim_project.compat.channels_redis import (
    ResubscribingPubSubLayer,
    group_add_many,
    group_discard_many,
    group_send_many,
    is_confirmed,
    local_queues,
    receive_many,
)

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

    async def group_send_many(self, items: list[tuple[str, dict]]) -> None:
        """Several `group_send`s in order, one Redis round trip per shard (the publisher's
        batches: docs/architecture.md, "Runtime details of the shared base"). Retried once
        like `group_send`."""
        try:
            await group_send_many(self._get_layer(), items)
        except dependency_error_types():
            await group_send_many(self._get_layer(), items)

    async def group_add_many(self, groups: list[str], channel: str) -> None:
        """`group_add` of each group, one SUBSCRIBE per shard (the hub's batched joins)."""
        await group_add_many(self._get_layer(), groups, channel)

    async def group_discard_many(self, groups: list[str], channel: str) -> None:
        await group_discard_many(self._get_layer(), groups, channel)

    async def receive_many(self, channel: str, limit: int) -> list[dict]:
        """The next message on `channel` and those already queued behind it (the hub's
        receive loop: one layer call per burst, not per event)."""
        return await receive_many(self._get_layer(), channel, limit)

    def group_confirmed(self, group: str) -> bool:
        """Redis has confirmed this process's subscription to `group` (docs/gateway.md,
        "Subscribe, replay and order": no tail check needed after it)."""
        return is_confirmed(self._get_layer(), group)
