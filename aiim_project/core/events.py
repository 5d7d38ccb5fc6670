"""Events: built once, serialized once, published only after the transaction commits; the layer
carries hints, the database stays the truth. Message shape, ordered publisher, LocalSink:
docs/architecture.md, "Runtime details of the shared base".
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import orjson
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from aiim_project.compat.asgiref import server_loop

from .metrics import PUBLISH_LAG_SECONDS
from .per_loop import PerLoop

logger = logging.getLogger("aiim.events")

EVENT_TYPE = "aiim.event"
# No "." in a raw part: the parts are joined with dots, so tenant "a.user.b" + user "c" and
# tenant "a" + user "b.user.c" would share a group. Such ids are hashed instead.
_GROUP_SAFE = re.compile(r"^[A-Za-z0-9_-]+$")


def _safe(part: str) -> str:
    if _GROUP_SAFE.match(part) and len(part) <= 40:
        return part
    return "h" + hashlib.sha1(part.encode()).hexdigest()


def conversation_group(tenant: str, conversation_id: str) -> str:
    return f"t.{_safe(tenant)}.conv.{_safe(conversation_id)}"


def user_group(tenant: str, user_id: str) -> str:
    return f"t.{_safe(tenant)}.user.{_safe(user_id)}"


def channel_name(conversation_id: str) -> str:
    return f"im:conv:{conversation_id}"


def dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def event_frame(conversation_id: str, event: str, data: dict[str, Any]) -> str:
    return dumps(
        {
            "type": "event",
            "channel": channel_name(conversation_id),
            "data": {"event": event, "conversation_id": conversation_id, **data},
        }
    )


def build(conversation_id: str, event: str, data: dict[str, Any], *, seq: int | None = None, **route: Any) -> dict:
    return {
        "type": EVENT_TYPE,
        "conversation_id": conversation_id,
        "event": event,
        "seq": seq,
        "frame": event_frame(conversation_id, event, data),
        **route,
    }


async def group_send(group: str, message: dict) -> None:
    await get_channel_layer().group_send(group, {**message, "group": group})


async def _group_send_all(batch: list[tuple[list[str], dict]]) -> None:
    """Publish a batch of events, in order: one pipeline (one Redis round trip) for the whole
    batch where the layer offers it, else one `group_send` each."""
    items = [(group, {**message, "group": group}) for groups, message in batch for group in groups]
    layer = get_channel_layer()
    send_many = getattr(layer, "group_send_many", None)
    try:
        if send_many is not None:
            await send_many(items)
        else:
            for group, message in items:
                try:
                    await layer.group_send(group, message)
                except Exception as exc:  # committed: a lost hint is recovered by readers
                    logger.warning("event publish failed: %s", type(exc).__name__)
    except Exception as exc:  # committed: a lost hint is recovered by readers
        logger.warning("event publish failed: %s", type(exc).__name__)
    done = time.time()
    for _, message in batch:
        committed_at = message.get("committed_at")
        if committed_at is not None:
            PUBLISH_LAG_SECONDS.observe(max(0.0, done - committed_at))


class _Publisher:
    """One per event loop: publishes in the order events were handed over, so a process's
    events of a conversation go out in seq order (docs/architecture.md). What was handed
    over while a batch was being published goes out together as the next batch."""

    MAX_BATCH = 256

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: deque[tuple[list[str], dict]] = deque()
        self.task: asyncio.Task | None = None

    def take(self, batch: list[tuple[list[str], dict]]) -> None:
        self.queue.extend(batch)
        if self.task is None:
            self.task = self.loop.create_task(self._run())

    async def _run(self) -> None:
        try:
            while self.queue:
                batch = [self.queue.popleft() for _ in range(min(len(self.queue), self.MAX_BATCH))]
                await _group_send_all(batch)
        finally:
            self.task = None


_publishers: PerLoop[_Publisher] = PerLoop(_Publisher)


class LocalSink:
    """Where a loop's own events reach its own connections (the hub) without the channel layer;
    the layer's copy carries `origin` and is dropped by it (docs/architecture.md)."""

    __slots__ = ("origin", "deliver")

    def __init__(self, origin: str, deliver: Callable[[dict], None]) -> None:
        self.origin = origin
        self.deliver = deliver


_local_sinks: PerLoop[LocalSink | None] = PerLoop(lambda loop: None)


def set_local_sink(loop: asyncio.AbstractEventLoop, sink: LocalSink) -> None:
    _local_sinks.set(loop, sink)


def _deliver_locally(sink: LocalSink, batch: list[tuple[list[str], dict]]) -> None:
    for groups, message in batch:
        message["origin"] = sink.origin
        for group in groups:
            try:
                sink.deliver({**message, "group": group})
            except Exception:  # committed: the other subscribers still get it
                logger.exception("local event delivery failed")


def _hand_over(loop: asyncio.AbstractEventLoop, batch: list[tuple[list[str], dict]]) -> None:
    sink = _local_sinks.peek(loop)
    if sink is not None:
        _deliver_locally(sink, batch)
    _publishers.get(loop).take(batch)


def publish_now(groups: list[str], message: dict) -> None:
    publish_all_now([(groups, message)])


def publish_all_now(batch: list[tuple[list[str], dict]]) -> None:
    """Hand the events to the channel layer, in order, without making the caller wait: queued
    on the server's loop, or run to completion outside a server."""
    # Called right after commit: subscribers measure commit-to-socket latency from here.
    committed_at = time.time()
    for _, message in batch:
        message["committed_at"] = committed_at
    loop = server_loop()
    if loop is not None:
        loop.call_soon_threadsafe(_hand_over, loop, batch)
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        try:
            async_to_sync(_group_send_all)(batch)
        except Exception as exc:  # the write has committed; a lost hint is recovered by readers
            logger.warning("event publish failed: %s", type(exc).__name__)
        return
    _hand_over(running, batch)


def publish_on_commit(groups: list[str], message: dict) -> None:
    transaction.on_commit(lambda: publish_now(groups, message), robust=True)


def publish_all_on_commit(batch: list[tuple[list[str], dict]]) -> None:
    """Several events of one transaction: one hand-over to the event loop, in order."""
    transaction.on_commit(lambda: publish_all_now(batch), robust=True)
