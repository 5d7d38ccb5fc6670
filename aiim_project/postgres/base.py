"""Django's PostgreSQL backend, with a pool that checks only connections idle a while: one
handed out within RECENT seconds cannot have sat through a restart (docs/architecture.md, "Runtime details of the shared base").
"""

from __future__ import annotations

import time
import weakref

from django.db.backends.postgresql import base
from psycopg_pool import ConnectionPool

from aiim_project.compat.psycopg_pool import set_check

RECENT = 0.25

_handed_out: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def check_unless_recent(conn) -> None:
    now = time.monotonic()
    last = _handed_out.get(conn)
    if last is None or now - last >= RECENT:
        ConnectionPool.check_connection(conn)
    _handed_out[conn] = now


class DatabaseWrapper(base.DatabaseWrapper):
    @property
    def pool(self):
        pool = super().pool
        if pool is not None:
            set_check(pool, check_unless_recent)
        return pool
