"""Whether a connection is still wanted: server pings after WS_PING_INTERVAL of client
silence, close 4408 after WS_IDLE_TIMEOUT of it, 4401 when the token expires, the presence
lease renewed while frames come in, and 4429 for a client that keeps hitting the rate limit."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable

from django.conf import settings

from aiim_project.core import presence

logger = logging.getLogger("aiim.gateway")

CLOSE_UNAUTHORIZED = 4401
CLOSE_IDLE = 4408
CLOSE_FLOOD = 4429
# A client that gets this many rate_limited errors within FLOOD_WINDOW seconds is closed.
FLOOD_STRIKES = 20
FLOOD_WINDOW = 5.0


class Liveness:
    def __init__(
        self,
        *,
        tenant: str,
        user_id: str,
        conn_id: str,
        expires_at: float | None,
        send_text: Callable[[str, str], Awaitable[None]],
        close: Callable[[int], Awaitable[None]],
        closing: Callable[[], bool],
    ) -> None:
        self._tenant, self._user_id, self._conn_id = tenant, user_id, conn_id
        self._expires_at = expires_at
        self._send_text, self._close, self._closing = send_text, close, closing
        now = time.monotonic()
        self._last_frame_at = self._last_ping_at = now
        self._presence_renewed_at = 0.0
        self._strikes: deque[float] = deque()

    def start(self) -> None:
        self._renew_presence(time.monotonic())

    def touch(self) -> None:
        """A client frame arrived."""
        now = time.monotonic()
        self._last_frame_at = now
        self._renew_presence(now)

    def _renew_presence(self, now: float) -> None:
        """Queued, not awaited: presence is advisory, and no frame waits for its lease write
        (the release at disconnect is queued after it, so it is written after it)."""
        if now - self._presence_renewed_at < presence.renew_interval():
            return
        self._presence_renewed_at = now
        presence.renew_soon(tenant=self._tenant, user_id=self._user_id, conn_id=self._conn_id).add_done_callback(_log_renew_failure)

    async def watch(self) -> None:
        """Runs for the life of the connection (the consumer cancels it)."""
        ping_every, idle_timeout = settings.WS_PING_INTERVAL, settings.WS_IDLE_TIMEOUT
        expires_at = self._expires_at
        while not self._closing():
            now = time.monotonic()
            if expires_at is not None and time.time() >= expires_at:
                await self._close(CLOSE_UNAUTHORIZED)
                return
            if now - self._last_frame_at >= idle_timeout:
                await self._close(CLOSE_IDLE)
                return
            next_ping = max(self._last_frame_at, self._last_ping_at) + ping_every
            if now >= next_ping:
                self._last_ping_at = now
                await self._send_text('{"type":"ping"}', "ping")
                next_ping = now + ping_every
            wake = min(next_ping, self._last_frame_at + idle_timeout)
            if expires_at is not None:
                wake = min(wake, now + max(0.0, expires_at - time.time()))
            await asyncio.sleep(max(0.01, wake - now))

    async def count_strike(self) -> None:
        """One more rate_limited answer: a client that keeps flooding is closed."""
        now = time.monotonic()
        self._strikes.append(now)
        while self._strikes and now - self._strikes[0] > FLOOD_WINDOW:
            self._strikes.popleft()
        if len(self._strikes) > FLOOD_STRIKES:
            logger.info("ws closed for flooding")
            await self._close(CLOSE_FLOOD)


def _log_renew_failure(done: asyncio.Future) -> None:
    if not done.cancelled() and done.exception() is not None:  # messaging goes on without it
        logger.warning("presence renew failed: %s", type(done.exception()).__name__)
