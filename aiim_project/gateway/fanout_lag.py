"""Back-pressure from fan-out to senders: while this process's events are delivered more than
WS_FANOUT_LAG_MS late, write frames wait (docs/gateway.md, "Fan-out back-pressure").
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from django.conf import settings

from aiim_project.core.errors import Unavailable
from aiim_project.core.metrics import WS_FANOUT_HELD

# A reading older than this counts only while events are still queued (docs/gateway.md,
# "Fan-out back-pressure").
FRESH_FOR = 0.01
POLL = 0.002


class FanoutLag:
    def __init__(self) -> None:
        self.lag = 0.0
        self.seen_at = float("-inf")
        # Set while nobody needs holding; one watcher task polls for everyone held, so a
        # few hundred held frames cost one wake-up per POLL, not one each.
        self._clear: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Events received by this process and not yet handed to its connections (the hub's).
        self.backlog: Callable[[], int] = lambda: 0

    def observe(self, committed_at: float) -> None:
        self.lag = time.time() - committed_at
        self.seen_at = time.monotonic()

    def behind(self, bound: float) -> bool:
        if self.lag <= bound:
            return False
        return time.monotonic() - self.seen_at < FRESH_FOR or self.backlog() > 0

    async def wait(self) -> None:
        """Return once delivery has caught up; `Unavailable` if it does not in time."""
        bound = settings.WS_FANOUT_LAG_MS / 1000
        if bound <= 0 or not self.behind(bound):
            return
        WS_FANOUT_HELD.inc()
        loop = asyncio.get_running_loop()
        if self._clear is None or self._clear.is_set() or self._loop is not loop:
            self._clear, self._loop = asyncio.Event(), loop
            asyncio.create_task(self._watch(self._clear, bound))
        try:
            await asyncio.wait_for(self._clear.wait(), settings.WS_FANOUT_WAIT_MS / 1000)
        except TimeoutError:
            raise Unavailable("Delivery is behind; retry shortly.", retry_after=max(0.1, round(self.lag, 1))) from None

    async def _watch(self, clear: asyncio.Event, bound: float) -> None:
        try:
            while self.behind(bound):
                await asyncio.sleep(POLL)
        finally:
            clear.set()


# Daphne runs one event loop per process: one reading per process.
LAG = FanoutLag()
