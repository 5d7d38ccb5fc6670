"""Wake this process's runner (a run was queued or stopped here) without importing it:
the trigger runs in the send path, which must not load the model client."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from asgiref.sync import SyncToAsync

# Set by the runner of each event loop: called on that loop.
_wakers: dict[asyncio.AbstractEventLoop, Callable[[], None]] = {}


def register(loop: asyncio.AbstractEventLoop, waker: Callable[[], None]) -> None:
    for old in [lp for lp in _wakers if lp.is_closed()]:
        del _wakers[old]
    _wakers[loop] = waker


def unregister(loop: asyncio.AbstractEventLoop) -> None:
    _wakers.pop(loop, None)


def wake() -> None:
    """From a worker thread of a loop (the ORM under in_worker or a REST request) or from the loop."""
    loop = getattr(SyncToAsync.threadlocal, "main_event_loop", None)
    if loop is None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
    targets = [loop] if loop is not None and loop in _wakers else list(_wakers)
    for target in targets:
        waker = _wakers.get(target)
        if waker is not None and not target.is_closed():
            target.call_soon_threadsafe(waker)
