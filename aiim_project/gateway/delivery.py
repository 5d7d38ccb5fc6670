"""Ordered delivery: one `OrderedDelivery` per (connection, subscribed conversation).

`message.created` reaches the socket in strictly increasing seq, once, with no acknowledged
message missed (docs/protocol.md section 5); stream chunks and updates follow in order.
Why this holds, and the stream rules: docs/gateway.md, "Ordered delivery: why it holds".
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from aiim_project.core.events import event_frame
from messaging.models import Message
from messaging.rendering import MemberCursors, StatusView, message_dict

logger = logging.getLogger("aiim.delivery")

# async (message_id, from_index) -> {"frame": str, "chunk_index": int, "last_chunk_index": int}
# | None: the text of chunks from_index..end (the streaming app's, handed over by the wiring).
ChunkLoader = Callable[[str, int], Awaitable[dict[str, Any] | None]]

FINAL_STREAM_STATES = frozenset({"completed", "aborted", "stopped", "failed"})
# Rows per database read when filling a gap; a longer gap takes several reads.
GAP_READ_LIMIT = 500
# A failing database read is retried after this long (the subscription keeps buffering).
RETRY_SECONDS = 1.0
# Ended streams remembered per subscription, to drop their late chunks.
FINISHED_MEMORY = 256


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message as read from the database, with its ready `message.created` frame."""

    seq: int
    message_id: str
    frame: str
    stream_state: str | None = None
    chunk_count: int = 0


def stored_message(message: Message, status: str) -> StoredMessage:
    frame = event_frame(message.conversation_id, "message.created", {"message": message_dict(message, status)})
    return StoredMessage(message.seq, message.id, frame, message.stream_state, message.stream_chunk_count)


def stored_messages(rows: list[Message], members: Iterable[MemberCursors]) -> list[StoredMessage]:
    """A replayed or gap-filled message is old: its status is what its sender sees now, from
    the conversation's members loaded once per batch."""
    statuses = StatusView(members)
    return [stored_message(m, statuses.status(m)) for m in rows]


class SubscriptionRevoked(Exception):
    """Raised by a load function that finds the subscriber is no longer a member: its
    `member.left` event was lost, and the database read is where that shows."""


Send = Callable[[str], None]
# (after_seq, up_to_seq, limit) -> stored messages with after_seq < seq <= up_to_seq, ascending.
Load = Callable[[int, int, int], Awaitable[list[StoredMessage]]]


@dataclass(slots=True)
class _Stream:
    """One streaming message of a `ChunkOrder`."""

    next_chunk: int
    held: list[dict] = field(default_factory=list)
    timer: asyncio.Task | None = None
    # A final message.updated that overtook chunks this subscription has not sent yet.
    final: dict | None = None
    final_chunk_count: int = 0


class OrderedDelivery:
    def __init__(
        self,
        *,
        send: Send,
        load: Load,
        next_seq: int,
        gap_wait: float,
        load_chunks: ChunkLoader | None = None,
        on_revoked: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.next_seq = next_seq
        self._send = send
        self._load = load
        self._on_revoked = on_revoked
        self._gap_wait = gap_wait
        self._lock = asyncio.Lock()
        self._out: list[str] = []
        self._early: dict[int, dict] = {}  # message.created events ahead of next_seq
        self._held: dict[str, list[dict]] = {}  # chunk/updated events of messages not yet sent
        self._chunks = ChunkOrder(self, load_chunks=load_chunks, gap_wait=gap_wait)
        self._gap_timer: asyncio.Task | None = None
        self._queued: deque[dict] = deque()  # offered while a read held the lock
        self._drainer: asyncio.Task | None = None
        self._closed = False

    # -- entry points -----------------------------------------------------------------

    async def replay(self, rows: list[StoredMessage]) -> None:
        """Send stored messages (the since_seq replay) in order, then continue live."""
        async with self._lock:
            for row in rows:
                if row.seq >= self.next_seq:
                    self._send_stored(row)
            self._release_held()
            self._flush()

    async def check_tail(self) -> None:
        """Read whatever committed at or after next_seq and send it: closes the window in
        which an event was published before the channel layer had our subscription."""
        await self._fill(None)

    def offer(self, event: dict) -> None:
        """Handle a live event now, or after the database read in progress."""
        if self._closed:
            return
        if self._lock.locked() or self._queued:
            self._queued.append(event)
            if self._drainer is None:
                self._drainer = asyncio.create_task(self._drain_queued())
            return
        self._handle(event)
        self._flush()

    async def on_event(self, event: dict) -> None:
        """`offer`, returning once the event has been handled."""
        self.offer(event)
        if self._drainer is not None:
            await asyncio.shield(self._drainer)

    async def _drain_queued(self) -> None:
        try:
            while self._queued and not self._closed:
                async with self._lock:
                    while self._queued:
                        self._handle(self._queued.popleft())
                    self._flush()
        finally:
            self._drainer = None

    def _handle(self, event: dict) -> None:
        kind = event["event"]
        if kind == "message.created":
            self._on_created(event)
        elif kind == "message.stream_chunk":
            self._on_stream_event(event, chunk=True)
        elif kind == "message.updated" and event.get("message_id") is not None:
            self._on_stream_event(event, chunk=False)
        else:
            self._out.append(event["frame"])

    def close(self) -> None:
        self._closed = True
        self._queued.clear()
        timers = [self._gap_timer, self._drainer, *self._chunks.timers()]
        for timer in timers:
            if timer is not None and timer is not asyncio.current_task():
                timer.cancel()

    # -- message.created ----------------------------------------------------------------

    def _on_created(self, event: dict) -> None:
        seq = event["seq"]
        if seq < self.next_seq:
            return
        if seq > self.next_seq:
            self._early[seq] = event
            self._arm_gap_timer()
            return
        self._send_created(event)
        self._drain_early()
        self._release_held()

    def _send_created(self, event: dict) -> None:
        if "message_id" in event:
            message_id, stream = event["message_id"], event.get("stream")
        else:  # published by a writer that sets no route fields: decode once
            message = orjson.loads(event["frame"])["data"]["message"]
            message_id, stream = message["message_id"], message.get("stream")
        self._out.append(event["frame"])
        self.next_seq = event["seq"] + 1
        if stream and stream.get("state") == "streaming":
            self._chunks.started(message_id, stream.get("chunk_count", 0))

    def _send_stored(self, row: StoredMessage) -> None:
        self._out.append(row.frame)
        self.next_seq = row.seq + 1
        if row.stream_state == "streaming":
            self._chunks.stored(row.message_id, row.chunk_count)
        elif row.stream_state in FINAL_STREAM_STATES:
            # Read after its stream ended: the row holds the whole text, so chunk events
            # still on their way are duplicates.
            self._chunks.finish(row.message_id)

    def _drain_early(self) -> None:
        while self.next_seq in self._early:
            self._send_created(self._early.pop(self.next_seq))
        for seq in [s for s in self._early if s < self.next_seq]:
            del self._early[seq]

    # -- gap fill ---------------------------------------------------------------------

    def _arm_gap_timer(self) -> None:
        if self._gap_timer is None and not self._closed:
            self._gap_timer = asyncio.create_task(self._gap_after_wait())

    def _gap_target(self) -> int | None:
        """Highest seq some received event proves committed, if it is not sent yet."""
        seqs = list(self._early)
        seqs += [e["seq"] for events in self._held.values() for e in events if e.get("seq") is not None]
        target = max(seqs, default=None)
        return target if target is not None and target >= self.next_seq else None

    async def _gap_after_wait(self) -> None:
        await asyncio.sleep(self._gap_wait)
        while not self._closed:
            target = self._gap_target()
            if target is None:
                break
            try:
                await self._fill(target)
            except Exception as exc:  # a down database delays the gap, never loses it
                logger.warning("gap fill failed: %s", type(exc).__name__)
                await asyncio.sleep(RETRY_SECONDS)
        self._gap_timer = None
        if self._gap_target() is not None and not self._closed:
            self._arm_gap_timer()

    async def _fill(self, target: int | None) -> None:
        """Send every stored message in [next_seq, target] (to the newest if None)."""
        async with self._lock:
            start = self.next_seq
            upper = target if target is not None else 2**62
            try:
                rows = await self._load(start - 1, upper, GAP_READ_LIMIT)
            except SubscriptionRevoked:
                self.close()
                if self._on_revoked is not None:
                    await self._on_revoked()
                return
            for row in rows:
                if row.seq >= self.next_seq:
                    self._send_stored(row)
            if target is not None and len(rows) < GAP_READ_LIMIT:
                # The read was final up to target: a seq missing from it is a failed send.
                self.next_seq = max(self.next_seq, target + 1)
            self._drain_early()
            self._release_held()
            self._flush()

    # -- stream chunks and updates ------------------------------------------------------

    def _on_stream_event(self, event: dict, *, chunk: bool) -> None:
        seq = event.get("seq")
        message_id = event["message_id"]
        if seq is not None and seq >= self.next_seq:
            self._held.setdefault(message_id, []).append(event)
            self._arm_gap_timer()
            return
        if chunk:
            self._chunks.on_chunk(message_id, event)
        else:
            self._chunks.on_updated(message_id, event)

    def _release_held(self) -> None:
        for message_id in [m for m, evs in self._held.items() if evs[0].get("seq", 0) < self.next_seq]:
            for event in self._held.pop(message_id):
                self._on_stream_event(event, chunk=event["event"] == "message.stream_chunk")

    def _flush(self) -> None:
        out, self._out = self._out, []
        if self._closed:  # unsubscribed (or removed) while a read was in flight
            return
        for frame in out:
            self._send(frame)


class ChunkOrder:
    """The chunks and final update of each streaming message a subscription has sent, in
    chunk order (the module's "Streams" paragraph). `load_chunks` fills a chunk gap from the
    database; it shares its subscription's lock, output and closed state."""

    def __init__(self, owner: OrderedDelivery, *, load_chunks: ChunkLoader | None, gap_wait: float) -> None:
        self._owner = owner
        self._load_chunks = load_chunks
        self._gap_wait = gap_wait
        self._streams: dict[str, _Stream] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()

    def timers(self) -> list[asyncio.Task]:
        return [s.timer for s in self._streams.values() if s.timer is not None]

    def started(self, message_id: str, chunk_count: int) -> None:
        """Its message.created was sent while streaming with `chunk_count` chunks."""
        self._streams.setdefault(message_id, _Stream(next_chunk=chunk_count))

    def stored(self, message_id: str, chunk_count: int) -> None:
        """Its row, read while streaming, holds `chunk_count` chunks."""
        stream = self._streams.get(message_id)
        if stream is None:
            self._streams[message_id] = _Stream(next_chunk=chunk_count)
        else:  # the row may hold chunks whose events are still on their way
            stream.next_chunk = max(stream.next_chunk, chunk_count)

    def on_chunk(self, message_id: str, event: dict) -> None:
        if message_id in self._finished:
            return
        stream = self._streams.get(message_id)
        if stream is None:
            stream = self._streams[message_id] = _Stream(next_chunk=event["chunk_index"])
        if event["last_chunk_index"] < stream.next_chunk:
            return
        if event["chunk_index"] == stream.next_chunk:
            self._owner._out.append(event["frame"])
            stream.next_chunk = event["last_chunk_index"] + 1
            self._drain_chunks(stream)
            self._settle(message_id, stream)
            return
        stream.held.append(event)
        self._arm_chunk_timer(message_id, stream)

    def _arm_chunk_timer(self, message_id: str, stream: _Stream) -> None:
        if stream.timer is None and not self._owner._closed:
            stream.timer = asyncio.create_task(self._chunk_gap_after_wait(message_id, stream))

    def _settle(self, message_id: str, stream: _Stream) -> None:
        """Send a deferred final update once every chunk before it has been sent."""
        if stream.final is not None and not stream.held and stream.next_chunk >= stream.final_chunk_count:
            self._owner._out.append(stream.final["frame"])
            self.finish(message_id)

    def _drain_chunks(self, stream: _Stream) -> None:
        progressed = True
        while progressed and stream.held:
            progressed = False
            for event in sorted(stream.held, key=lambda e: e["chunk_index"]):
                if event["last_chunk_index"] < stream.next_chunk:
                    stream.held.remove(event)
                    progressed = True
                elif event["chunk_index"] == stream.next_chunk:
                    stream.held.remove(event)
                    self._owner._out.append(event["frame"])
                    stream.next_chunk = event["last_chunk_index"] + 1
                    progressed = True

    async def _chunk_gap_after_wait(self, message_id: str, stream: _Stream) -> None:
        await asyncio.sleep(self._gap_wait)
        async with self._owner._lock:
            stream.timer = None
            if self._owner._closed or self._streams.get(message_id) is not stream:
                return
            if not stream.held and stream.final is None:
                return
            filled = None
            if self._load_chunks is not None:
                try:
                    filled = await self._load_chunks(message_id, stream.next_chunk)
                except Exception as exc:
                    logger.warning("chunk gap fill failed: %s", type(exc).__name__)
            if filled and filled["chunk_index"] == stream.next_chunk and filled["last_chunk_index"] >= stream.next_chunk:
                self._owner._out.append(filled["frame"])
                stream.next_chunk = filled["last_chunk_index"] + 1
                self._drain_chunks(stream)
            # Whatever is still held cannot be filled: send it in order rather than stall.
            for event in sorted(stream.held, key=lambda e: e["chunk_index"]):
                if event["chunk_index"] >= stream.next_chunk:
                    self._owner._out.append(event["frame"])
                    stream.next_chunk = event["last_chunk_index"] + 1
            stream.held.clear()
            if stream.final is not None:  # its full text makes up for any chunk still missing
                stream.next_chunk = max(stream.next_chunk, stream.final_chunk_count)
                self._settle(message_id, stream)
            self._owner._flush()

    def on_updated(self, message_id: str, event: dict) -> None:
        info = (orjson.loads(event["frame"])["data"].get("message") or {}).get("stream") or {}
        stream = self._streams.get(message_id)
        if info.get("state") in FINAL_STREAM_STATES and stream is not None:
            # The final update can overtake the stream's last chunk events (they are coalesced
            # or published from another process): it waits until they are sent or filled.
            stream.final, stream.final_chunk_count = event, info.get("chunk_count", 0)
            self._settle(message_id, stream)
            if message_id in self._streams:
                self._arm_chunk_timer(message_id, stream)
            return
        self._owner._out.append(event["frame"])
        if info.get("state") in FINAL_STREAM_STATES:
            self.finish(message_id)

    def finish(self, message_id: str) -> None:
        ended = self._streams.pop(message_id, None)
        if ended is not None and ended.timer is not None:
            ended.timer.cancel()
        self._finished[message_id] = None
        if len(self._finished) > FINISHED_MEMORY:
            self._finished.popitem(last=False)
