"""One connection's socket: every Daphne, autobahn and Twisted detail of the gateway.
Output in call order, input flow control, frames taken for runs (docs/gateway.md, "Modules").
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

from django.conf import settings

from aiim_project.compat import autobahn, daphne, twisted

from .hub import Wire, text_frame

# Client frames queued but not yet handled: above HIGH the socket is not read until the
# queue is down to LOW (see `flow_control`).
INBOUND_HIGH_WATER = 64
INBOUND_LOW_WATER = 16


class Socket:
    def __init__(self, base_send: Callable[[dict], Any], on_overflow: Callable[[], None]) -> None:
        self._base_send = base_send
        # Called when the client stops reading: unsent bytes passed WS_SEND_BUFFER_BYTES.
        self._on_overflow = on_overflow
        self._protocol = daphne.protocol_of(base_send)
        self._transport = getattr(self._protocol, "transport", None)
        self.direct = self._protocol is not None and autobahn.can_send_directly(self._protocol)
        self._reading_paused = False
        self._outbox: deque[str] = deque()
        self._writer: asyncio.Task | None = None

    def emit(self, text: str, wire: Wire | None = None) -> bool:
        """Hand one frame to the socket, after every frame emitted before it; False if the
        connection is no longer open."""
        if self.direct:
            protocol = self._protocol
            if not autobahn.is_open(protocol):
                return False
            if autobahn.idle(protocol):
                twisted.write_now(self._transport, wire.frame_bytes() if wire is not None else text_frame(text.encode()))
            else:  # autobahn has a frame of its own in progress: queue behind it
                protocol.sendMessage(text.encode(), False)
            # Nothing it missed is lost (the database has it: it resumes with since_seq), so
            # a client that does not read is cut off instead of held in server memory.
            if twisted.buffered_bytes(self._transport) > settings.WS_SEND_BUFFER_BYTES:
                self._on_overflow()
            return True
        self._outbox.append(text)
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_outbox())
        return True

    async def _write_outbox(self) -> None:
        try:
            while self._outbox:
                await self._base_send({"type": "websocket.send", "text": self._outbox.popleft()})
        finally:
            self._writer = None

    async def drain(self) -> None:
        """Wait until what was already emitted has gone out (before a close)."""
        if self._writer is not None:
            await asyncio.shield(self._writer)

    def inbound_queue(self) -> asyncio.Queue | None:
        """Daphne's queue of client frames read and not yet handled (None elsewhere)."""
        return daphne.inbound_queue(self._protocol)

    def flow_control(self, held: int) -> None:
        """Stop reading a client whose backlog (Daphne's queue plus `held` run frames) is too
        long, until it is short again: TCP slows the client instead of memory growing."""
        backlog = daphne.inbound_backlog(self._protocol) + held
        if not self._reading_paused and backlog > INBOUND_HIGH_WATER:
            self._transport.pauseProducing()
            self._reading_paused = True
        elif self._reading_paused and backlog <= INBOUND_LOW_WATER:
            self._transport.resumeProducing()
            self._reading_paused = False
