"""Chunk-event coalescing: one `message.stream_chunk` event for the chunks of a stream that
commit within STREAM_COALESCE_MS of the first (0 = off). Why, and how the seam stays exact:
docs/streaming.md, "Coalescing".
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from functools import partial

from django.conf import settings
from django.db import transaction

from aiim_project.compat.asgiref import server_loop
from aiim_project.core import events
from aiim_project.core.per_loop import PerLoop
from messaging.models import Message

from .rendering import chunk_event


@dataclass
class _Batch:
    groups: list[str]
    message: Message
    first: int
    last: int
    stream_end: bool
    parts: list[str] = field(default_factory=list)


class Coalescer:
    """One per event loop; touched only from that loop's thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._pending: dict[str, _Batch] = {}

    def add(self, groups: list[str], message: Message, first: int, last: int, delta: str, stream_end: bool, window: float) -> None:
        """Chunks first..last (their text `delta`), committed together."""
        batch = self._pending.get(message.id)
        if batch is not None and first != batch.last + 1:
            self.flush(message.id)
            batch = None
        if batch is None:
            batch = self._pending[message.id] = _Batch(groups, message, first, last, stream_end, [delta])
            self._loop.call_later(window, self._flush_if_pending, message.id, batch)
        else:
            batch.parts.append(delta)
            batch.last, batch.stream_end = last, stream_end
        if stream_end:
            self.flush(message.id)

    def _flush_if_pending(self, message_id: str, batch: _Batch) -> None:
        if self._pending.get(message_id) is batch:
            self.flush(message_id)

    def flush(self, message_id: str) -> None:
        batch = self._pending.pop(message_id, None)
        if batch is not None:
            event = chunk_event(
                batch.message, first=batch.first, last=batch.last, delta="".join(batch.parts), stream_end=batch.stream_end
            )
            events.publish_now(batch.groups, event)

    def publish_after_pending(self, groups: list[str], message_id: str, event: dict) -> None:
        self.flush(message_id)
        events.publish_now(groups, event)


# Called on the loop's own thread, so there is only ever one per loop.
_coalescers: PerLoop[Coalescer] = PerLoop(Coalescer)


def _coalescer() -> Coalescer:
    return _coalescers.get()


def _add(*args) -> None:
    _coalescer().add(*args)


def _publish_after_pending(*args) -> None:
    _coalescer().publish_after_pending(*args)


def publish_chunk_on_commit(groups: list[str], message: Message, *, index: int, chunk: str, stream_end: bool) -> None:
    publish_chunks_on_commit(groups, message, first=index, last=index, delta=chunk, stream_end=stream_end)


def publish_chunks_on_commit(groups: list[str], message: Message, *, first: int, last: int, delta: str, stream_end: bool) -> None:
    """One event for chunks first..last committed in one transaction (`delta` their text in
    order), merged with the stream's pending batch if coalescing is on."""
    transaction.on_commit(partial(publish_chunks_now, groups, message, first=first, last=last, delta=delta, stream_end=stream_end), robust=True)


def publish_chunks_now(groups: list[str], message: Message, *, first: int, last: int, delta: str, stream_end: bool) -> None:
    """`publish_chunks_on_commit` for chunks already committed."""
    window = settings.STREAM_COALESCE_MS / 1000
    loop = server_loop()
    if window <= 0 or loop is None:
        events.publish_now(groups, chunk_event(message, first=first, last=last, delta=delta, stream_end=stream_end))
        return
    loop.call_soon_threadsafe(_add, groups, message, first, last, delta, stream_end, window)


def publish_stream_event_on_commit(groups: list[str], message_id: str, event: dict) -> None:
    """A stream's `message.updated`: after any chunk batch of that stream still pending here."""

    def hand_over() -> None:
        loop = server_loop()
        if loop is None:
            events.publish_now(groups, event)
            return
        loop.call_soon_threadsafe(_publish_after_pending, groups, message_id, event)

    transaction.on_commit(hand_over, robust=True)
