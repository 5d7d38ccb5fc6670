"""asgiref: the server's event loop seen from a worker thread, read from the undocumented
`SyncToAsync.threadlocal.main_event_loop` (docs/internals.md).
"""

from __future__ import annotations

import asyncio

from asgiref.sync import SyncToAsync


def server_loop() -> asyncio.AbstractEventLoop | None:
    """The running loop this worker thread serves, or None outside a server's thread."""
    loop = getattr(SyncToAsync.threadlocal, "main_event_loop", None)
    return loop if loop is not None and loop.is_running() else None
