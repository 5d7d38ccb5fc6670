"""Each server process reaps idle streams in the background, started lazily by the first
stream frame or REST stream start it handles (Daphne has no start-up hook). Every process may run one: the
reaper's row locks make that safe. Operators can also run `manage.py abort_stale_streams`."""

from __future__ import annotations

import asyncio
import contextvars
import logging

from django.conf import settings

from aiim_project.compat.asgiref import server_loop
from aiim_project.core.db import in_worker
from aiim_project.core.per_loop import PerLoop

from . import services

logger = logging.getLogger("aiim.streaming")

_tasks: PerLoop[asyncio.Task | None] = PerLoop(lambda loop: None)


def interval() -> float:
    # A stream is aborted at most a quarter of the timeout late.
    return max(0.2, settings.STREAM_IDLE_TIMEOUT / 4)


async def _run() -> None:
    while True:
        await asyncio.sleep(interval())
        try:
            reaped = await in_worker(services.streams_reap)()
        except Exception as exc:  # a database outage must not kill the loop
            logger.warning("stream reaper failed: %s", type(exc).__name__)
            continue
        if reaped:
            logger.info("aborted %d idle streams", len(reaped))


def ensure_running() -> None:
    loop = asyncio.get_running_loop()
    task = _tasks.get(loop)
    if task is None or task.done():
        # A fresh context: the task outlives the request or connection that started it, and
        # must not inherit its thread-sensitive executor (gone once the request ends).
        _tasks.set(loop, loop.create_task(_run(), name="aiim-stream-reaper", context=contextvars.Context()))


def ensure_running_from_worker_thread() -> None:
    """For sync views: they run in a worker thread of the server's loop (if any)."""
    loop = server_loop()
    if loop is not None:
        loop.call_soon_threadsafe(ensure_running)
