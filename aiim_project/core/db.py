"""ORM work from async code on a worker thread of the event loop's executor, handing the
thread's connection back after every call, in tests too (docs/architecture.md, "Runtime details of the shared base").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import django.db
from channels.db import DatabaseSyncToAsync


class _WorkerSyncToAsync(DatabaseSyncToAsync):
    def thread_handler(self, loop, *args: Any, **kwargs: Any):
        try:
            return super().thread_handler(loop, *args, **kwargs)
        finally:
            django.db.close_old_connections()


def in_worker(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Awaitable version of `fn` that runs on a worker thread and returns its connection."""
    return _WorkerSyncToAsync(fn, thread_sensitive=False)
