"""A conversation's events over Server-Sent Events, for clients that cannot use the WebSocket.

The subscription is the WebSocket's (aiim_project.gateway.subscription: join the hub's
group, read the snapshot, replay, live, tail check) with the same `messaging.delivery`
ordering, so the guarantee is the same: `message.created` in strictly increasing seq, each
once, nothing acknowledged missed. What differs is the framing:

    id: <cursor>          the seq of the last message.created sent (every event carries it)
    event: <event name>   message.created, message.stream_chunk, ..., or subscribed / error
    data: <JSON>          the `data` object of the WebSocket event frame, byte for byte

A client that reconnects with `Last-Event-ID: <cursor>` (EventSource does it by itself)
resumes exactly after it. The first event is `subscribed` (`last_seq`, and `recovered:
false` when more than WS_RECOVERY_LIMIT were missed: the client pages the rest over REST,
and its cursor moves to `last_seq`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from django.conf import settings

from aiim_project.core import events
from aiim_project.core.errors import as_aiim_error
from aiim_project.core.metrics import SSE_STREAMS
from aiim_project.gateway import delivery, subscriptions
from aiim_project.gateway.hub import get_hub

from . import encoding as sse

logger = logging.getLogger("aiim.gateway.sse")

RETRY_MS = 1000  # how soon EventSource reconnects after the stream drops
_DATA_KEY = ',"data":'


def data_of(frame: str) -> str:
    """The `data` object of an event frame, as text. `event_frame` writes type, channel, data
    in that order; a quote inside the channel would be escaped, so the first unescaped
    `,"data":` is the key."""
    return frame[frame.index(_DATA_KEY) + len(_DATA_KEY) : -1]


class EventStream(sse.Outbox):
    """A hub member for one conversation of one SSE client."""

    def __init__(self, *, tenant: str, user_id: str, conversation_id: str) -> None:
        super().__init__()
        self.tenant, self.user_id, self.conversation_id = tenant, user_id, conversation_id
        self.group = events.conversation_group(tenant, conversation_id)
        self.sub: delivery.OrderedDelivery | None = None
        self.cursor = 0
        self._pending: list[dict] = []
        self._tasks: set[asyncio.Task] = set()

    # -- the hub's member interface ----------------------------------------------------

    def hub_event(self, message: dict, wire: Any) -> int:
        if self.done:
            return 0
        if message.get("seq") is None:
            about = message.get("user_id")
            if about is None:
                about = orjson.loads(message["frame"])["data"].get("user_id")
            if about == self.user_id:
                if message["event"] == "typing":  # the typist's own devices do not need it
                    return 0
                if message["event"] == "member.left":
                    self.send_frame(message["frame"])
                    self._error("forbidden", "You are no longer a member of this conversation.")
                    return 0
        if self.sub is None:
            self._pending.append(message)
        else:
            self.sub.offer(message)
        return 0  # not a WebSocket frame: the hub's frame counter leaves it out

    def hub_resync(self) -> None:
        if not self.done and self.sub is not None:
            self.spawn(subscriptions.check_tail_later(self.sub))

    # -- output -------------------------------------------------------------------------

    def send_frame(self, frame: str) -> None:
        """The subscription's `send`: one WebSocket event frame, as an SSE event."""
        if self.done:
            return
        data = data_of(frame)
        parsed = orjson.loads(data)
        name = parsed.get("event", "event")
        if name == "message.created":
            self.cursor = max(self.cursor, parsed["message"]["seq"])
        self._emit(sse.event(event_id=self.cursor, name=name, data=data))

    def subscribed(self, last_seq: int, recovered: bool) -> None:
        body: dict[str, Any] = {"conversation_id": self.conversation_id, "last_seq": last_seq}
        if not recovered:
            body["recovered"] = False
        self._emit(sse.event(event_id=self.cursor, name="subscribed", data=orjson.dumps(body), retry_ms=RETRY_MS))

    def _error(self, code: str, message: str) -> None:
        body = {"type": "error", "code": code, "message": message, "conversation_id": self.conversation_id}
        self._emit(sse.event(event_id=self.cursor, name="error", data=orjson.dumps(body)))
        self.close()

    async def revoked(self) -> None:
        """A database read found the member gone (its member.left event was lost)."""
        self._error("forbidden", "You are no longer a member of this conversation.")

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def close(self) -> None:
        self.done = True
        self.wake.set()
        if self.sub is not None:
            self.sub.close()
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()


async def conversation_events(
    *,
    tenant: str,
    user_id: str,
    conversation_id: str,
    since_seq: int | None,
    expires_at: float | None,
    load_chunks: delivery.ChunkLoader | None,
) -> AsyncIterator[bytes]:
    stream = EventStream(tenant=tenant, user_id=user_id, conversation_id=conversation_id)
    hub = get_hub()
    heartbeat = settings.SSE_HEARTBEAT_SECONDS
    SSE_STREAMS.labels("events").inc()
    try:
        try:
            opened = await subscriptions.open_subscription(
                hub=hub, member=stream, tenant=tenant, user_id=user_id, conversation_id=conversation_id,
                since_seq=since_seq, send=stream.send_frame, load_chunks=load_chunks, on_revoked=stream.revoked,
            )
        except Exception as exc:  # access lost since the view's check, or Redis/the database down
            err = as_aiim_error(exc)
            if err is None:
                raise
            stream._error(err.code, err.detail)
            yield stream.take()
            return
        stream.sub = opened.sub
        if stream.done:  # removed while subscribing: member.left and the error are queued
            opened.sub.close()
            yield stream.take()
            return
        stream.cursor = opened.sub.next_seq - 1
        stream.subscribed(opened.last_seq, opened.recovered)
        await subscriptions.start(opened.sub, opened.replay, opened.last_seq)
        pending, stream._pending = stream._pending, []
        for message in pending:
            opened.sub.offer(message)
        if opened.tail_check:
            stream.spawn(subscriptions.check_tail_later(opened.sub))
        while True:
            out = stream.take()
            if out:
                yield out
            if stream.done:
                return
            wait = heartbeat if expires_at is None else min(heartbeat, expires_at - time.time())
            if wait <= 0:
                stream._error("token_expired", "The token has expired.")
                continue
            try:
                await asyncio.wait_for(stream.wake.wait(), wait)
            except TimeoutError:
                if expires_at is None or time.time() < expires_at:
                    yield sse.HEARTBEAT
    finally:
        SSE_STREAMS.labels("events").dec()
        stream.close()
        hub.leave_soon(stream.group, stream)
