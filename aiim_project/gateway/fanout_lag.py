"""Back-pressure from fan-out to senders.

One process accepts sends faster than its core can hand their events to every subscriber,
and nothing else pushes back: the events queue in the channel layer and delivery latency
grows for as long as the load lasts. The age of the events the gateway is delivering
(now - `committed_at`) is that queue measured in time. While it is over WS_FANOUT_LAG_MS,
write frames wait before they are handled, so the loop spends its time on delivery, acks
slow down, and a client that keeps a few acks outstanding slows down with them. A frame
that waits longer than WS_FANOUT_WAIT_MS is refused with `unavailable` and a retry hint.

Nothing is traded: a waiting frame is not yet handled (the connection's frames stay in
order, the ack still follows the commit), and a refused one was never stored.

The lag is this process's only: senders connected to another process are held by that
process's own lag, not by this one's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from django.conf import settings

from aiim_project.core.errors import Unavailable
from aiim_project.core.metrics import WS_FANOUT_HELD

# A reading older than this says nothing about now, unless events are still queued for
# delivery: events stop arriving once the backlog is drained, and the last one delivered was
# then as late as the whole backlog was. (A loop iteration that runs long under load leaves
# a gap between readings too; the queue tells that apart from a drained backlog.)
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
