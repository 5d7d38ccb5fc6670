"""Server-Sent Events framing (the WHATWG `text/event-stream` format), bytes ready to send."""

from __future__ import annotations

import asyncio

import orjson

HEARTBEAT = b": ping\n\n"


def data_only(obj: object) -> bytes:
    """One event with just a `data:` line (what the AI SDK's parser reads)."""
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def event(*, event_id: int | str | None, name: str, data: str | bytes, retry_ms: int | None = None) -> bytes:
    """An event with `id:` (the client's Last-Event-ID on reconnect), `event:` and one
    `data:` line. `data` must hold no newline: compact JSON never does."""
    out = b""
    if retry_ms is not None:
        out += b"retry: %d\n" % retry_ms
    if event_id is not None:
        out += b"id: %s\n" % str(event_id).encode()
    body = data if isinstance(data, bytes) else data.encode()
    return out + b"event: " + name.encode() + b"\ndata: " + body + b"\n\n"


class Outbox:
    """SSE bytes handed from the hub's callbacks to the response's iterator: `_emit` queues
    and wakes it, `take` drains; nothing more once `done` (after the end or the error)."""

    def __init__(self) -> None:
        self._out: list[bytes] = []
        self.wake = asyncio.Event()
        self.done = False

    def _emit(self, data: bytes) -> None:
        if data and not self.done:
            self._out.append(data)
            self.wake.set()

    def take(self) -> bytes:
        out, self._out = b"".join(self._out), []
        self.wake.clear()
        return out
