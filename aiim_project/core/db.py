"""ORM work from async code on a worker thread of the event loop's executor.

`database_sync_to_async(fn, thread_sensitive=False)` lets reads and sends run beside each
other instead of queueing on the one thread-sensitive executor. Each worker thread keeps its
own Django connection, so it must hand that connection back to the pool after every call.
Channels' test communicator replaces `channels.db.close_old_connections` with a no-op
(it protects the test's own connection); calling Django's function directly keeps the
hand-back in tests too, where executor threads die with every test's event loop and would
otherwise strand their pooled connections.
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
