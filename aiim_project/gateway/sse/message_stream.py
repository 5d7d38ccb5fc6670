"""One message as a UI message stream: the text stored so far, then its live chunks.

The seam is the subscription's (aiim_project.gateway.subscription): the follower joins the
conversation's group on the process's hub FIRST, then reads the message row. The row holds
the text of exactly `stream_chunk_count` chunks, so a chunk event that ends below that count
is already in the stored text (dropped), and every later chunk arrives as an event. The
chunk ordering (duplicates, a chunk that overtakes another, a lost chunk filled from the
database, a final update that overtakes the last chunks) is `messaging.delivery`'s, for
this one message: the follower hands it only this message's events.

Safety net, as the WebSocket's resync: after a channel-layer reconnect, and whenever the
stream has been idle for a heartbeat, the row is read again: chunks it holds that no event
brought are filled, and a final state no event brought ends the stream. The final state's
content is the truth: text it holds beyond what was sent goes out before the end.

Nothing here holds a thread or a database connection while it waits: reads run on a worker
thread and return their connection (`in_worker`), the wait is on the event loop.
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
from aiim_project.core.db import in_worker
from aiim_project.core.errors import AiimError, as_aiim_error
from aiim_project.core.metrics import SSE_STREAMS
from aiim_project.gateway import delivery
from aiim_project.gateway.hub import get_hub
from messaging import selectors
from messaging.models import Message
from messaging.rendering import message_dict

from . import encoding as sse
from .uimessage import UIMessageEncoder

logger = logging.getLogger("aiim.gateway.sse")

STREAMING = "streaming"


def reasoning_of(message: Message) -> str:
    """The reasoning the model sent before this reply's first token (an assistant run keeps
    it in the reply's `metadata["reasoning"]`): reasoning parts before the text; empty for
    any other message."""
    value = (message.metadata or {}).get("reasoning") if isinstance(message.metadata, dict) else None
    return value if isinstance(value, str) else ""


RUN_KEYS = ("run_id", "usage")


def run_extras(metadata: Any) -> dict[str, Any]:
    """run_id and usage, when the message carries them in its metadata (an assistant run's
    reply; usage is known only at the end, so the final message's is sent with `finish`)."""
    metadata = metadata if isinstance(metadata, dict) else {}
    return {key: metadata[key] for key in RUN_KEYS if metadata.get(key) is not None}


def metadata_of(message: Message) -> dict[str, Any]:
    """AIIM's extras for the SDK's `messageMetadata`."""
    return {"seq": message.seq, "conversation_id": message.conversation_id, **run_extras(message.metadata)}


def text_of(content: Any) -> str:
    if content is None:
        return ""
    return content if isinstance(content, str) else orjson.dumps(content).decode()


async def _no_reads(after_seq: int, up_to_seq: int, limit: int) -> list[delivery.StoredMessage]:
    """The follower offers only its own message's events, all below next_seq: the
    subscription never needs to read other messages."""
    return []


class MessageFollower(sse.Outbox):
    """A hub member for one message. Output: `take()` bytes; `done` once the stream ended."""

    def __init__(
        self, *, tenant: str, user_id: str, conversation_id: str, message_id: str, load_chunks: delivery.ChunkLoader | None
    ) -> None:
        super().__init__()
        self.tenant, self.user_id = tenant, user_id
        self._load_chunks = load_chunks
        self.conversation_id, self.message_id = conversation_id, message_id
        self.group = events.conversation_group(tenant, conversation_id)
        self.encoder = UIMessageEncoder(message_id)
        self.sub: delivery.OrderedDelivery | None = None
        self._pending: list[dict] = []  # this message's events before the row was read
        self.sent = ""  # the text sent so far
        self.next_chunk = 0
        self.seq = 0

    # -- the hub's member interface ----------------------------------------------------

    def hub_event(self, message: dict, wire: Any) -> int:
        if self.done:
            return 0
        kind = message.get("event")
        if message.get("message_id") == self.message_id and kind in ("message.stream_chunk", "message.updated"):
            if self.sub is None:
                self._pending.append(message)
            else:
                self.sub.offer(message)
        elif kind == "member.left" and message.get("user_id") == self.user_id:
            self._emit(self.encoder.fail("You are no longer a member of this conversation."))
            self._finish()
        return 0  # not a WebSocket frame: the hub's frame counter leaves it out

    def hub_resync(self) -> None:
        if not self.done and self.sub is not None:
            task = asyncio.get_running_loop().create_task(self.catch_up())
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    # -- output -------------------------------------------------------------------------

    def _finish(self) -> None:
        self.done = True
        self.wake.set()
        if self.sub is not None:
            self.sub.close()

    def _text(self, delta: str) -> None:
        if delta:
            self.sent += delta
            self._emit(self.encoder.text(delta))

    def _end(self, final: dict) -> None:
        """The final message (message_dict shape): the text it holds beyond what was sent,
        then the closing parts."""
        content = text_of(final.get("content"))
        if content.startswith(self.sent):
            self._text(content[len(self.sent):])
        else:  # cannot happen while chunks only append; say so rather than send a wrong text
            logger.warning("stream text diverged from the stored message %s", self.message_id)
        state = (final.get("stream") or {}).get("state")
        self._emit(self.encoder.end(state, metadata={**run_extras(final.get("metadata")), "state": state or "completed"}))
        self._finish()

    # -- the subscription's frames -------------------------------------------------------

    def _on_frame(self, frame: str) -> None:
        if self.done or not frame:  # "": the starting row's frame (see begin)
            return
        data = orjson.loads(frame)["data"]
        kind = data.get("event")
        if kind == "message.stream_chunk":
            self.next_chunk = max(self.next_chunk, data["last_chunk_index"] + 1)
            self._text(data.get("delta") or "")
        # HOOK: live reasoning, once the assistants run publishes it as events of this message,
        # goes out here through self.encoder.reasoning(delta) (the encoder keeps it before the
        # text); the follower would also need to hand those events on in hub_event.
        elif kind == "message.updated":
            message = data.get("message") or {}
            if (message.get("stream") or {}).get("state") not in (None, STREAMING):
                self._end(message)

    # -- start and catch-up -------------------------------------------------------------

    async def begin(self, message: Message) -> None:
        """Called with the row read after joining: the stored part, then live."""
        if self.done:  # removed while the row was read: the error is already queued
            return
        self.seq, self.next_chunk = message.seq, message.stream_chunk_count
        self.encoder = UIMessageEncoder(message.id, metadata_of(message))
        self._emit(self.encoder.start())
        self._emit(self.encoder.reasoning(reasoning_of(message)))
        if message.stream_state != STREAMING:
            self._end(message_dict(message))
            return
        self._text(text_of(message.content))
        self.sub = delivery.OrderedDelivery(
            send=self._on_frame,
            load=_no_reads,
            load_chunks=self._load_chunks,
            next_seq=message.seq,
            gap_wait=settings.WS_GAP_WAIT_MS / 1000,
        )
        # The row as the subscription's starting point: its stream continues at chunk_count.
        await self.sub.replay([delivery.StoredMessage(message.seq, message.id, "", STREAMING, message.stream_chunk_count)])
        pending, self._pending = self._pending, []
        for event in pending:
            self.sub.offer(event)

    async def catch_up(self) -> None:
        """Read the row again and hand the subscription what no event brought."""
        if self.done or self.sub is None:
            return
        try:
            message = await in_worker(selectors.message_for_member)(
                tenant=self.tenant, user_id=self.user_id, conversation_id=self.conversation_id, message_id=self.message_id
            )
        except AiimError as exc:
            if not self.done:
                self._emit(self.encoder.fail(exc.detail))
                self._finish()
            return
        if self.done:
            return
        if message.stream_state == STREAMING:
            if message.stream_chunk_count > self.next_chunk and self._load_chunks is not None:
                filled = await self._load_chunks(self.message_id, self.next_chunk)
                if filled and not self.done:
                    self.sub.offer({"event": "message.stream_chunk", "frame": filled["frame"], "message_id": self.message_id,
                                    "seq": self.seq, "chunk_index": filled["chunk_index"],
                                    "last_chunk_index": filled["last_chunk_index"]})
            return
        frame = events.event_frame(self.conversation_id, "message.updated", {"message": message_dict(message)})
        self.sub.offer({"event": "message.updated", "frame": frame, "message_id": self.message_id, "seq": self.seq})


async def ui_message_stream(
    *,
    tenant: str,
    user_id: str,
    conversation_id: str,
    message_id: str,
    expires_at: float | None,
    load_chunks: delivery.ChunkLoader | None,
) -> AsyncIterator[bytes]:
    """The response body: SSE bytes until the message's stream ends (or access does)."""
    follower = MessageFollower(
        tenant=tenant, user_id=user_id, conversation_id=conversation_id, message_id=message_id, load_chunks=load_chunks
    )
    hub = get_hub()
    heartbeat = settings.SSE_HEARTBEAT_SECONDS
    SSE_STREAMS.labels("message").inc()
    try:
        try:
            await hub.join(follower.group, follower)
            message = await in_worker(selectors.message_for_member)(
                tenant=tenant, user_id=user_id, conversation_id=conversation_id, message_id=message_id
            )
        except Exception as exc:  # access lost since the view's check, or Redis/the database down
            err = as_aiim_error(exc)
            if err is None:
                raise
            yield follower.encoder.fail(err.detail)
            return
        await follower.begin(message)
        while True:
            out = follower.take()
            if out:
                yield out
            if follower.done:
                return
            wait = heartbeat if expires_at is None else min(heartbeat, expires_at - time.time())
            if wait <= 0:
                yield follower.encoder.fail("The token has expired.")
                return
            try:
                await asyncio.wait_for(follower.wake.wait(), wait)
            except TimeoutError:
                if expires_at is None or time.time() < expires_at:
                    yield sse.HEARTBEAT
                    await follower.catch_up()
    finally:
        SSE_STREAMS.labels("message").dec()
        follower.done = True
        if follower.sub is not None:
            follower.sub.close()
        hub.leave_soon(follower.group, follower)
