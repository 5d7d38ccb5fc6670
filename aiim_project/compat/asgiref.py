"""asgiref: the event loop of the server, seen from one of its worker threads.

Sync code (the ORM in a view or a `sync_to_async` call) that must schedule work on the
server's loop (publish an event after commit, start a background task) finds the loop in
`SyncToAsync.threadlocal.main_event_loop`, which asgiref sets on the threads it runs sync
code on and documents nowhere.
"""

from __future__ import annotations

import asyncio

from asgiref.sync import SyncToAsync


def server_loop() -> asyncio.AbstractEventLoop | None:
    """The running loop this worker thread serves, or None outside a server's thread."""
    loop = getattr(SyncToAsync.threadlocal, "main_event_loop", None)
    return loop if loop is not None and loop.is_running() else None
