"""Django's PostgreSQL backend, with a pool that checks only connections idle a while.

A check per checkout (Django's CONN_HEALTH_CHECKS) costs a database round trip on every
worker-thread call and request, and under load a connection is handed out again within
milliseconds of its last use. The check exists for connections that sat idle through a
database restart or a network cut (dead without knowing it); a connection handed out less
than RECENT seconds ago did not sit idle through one (a restart takes longer; the
reliability suite cuts the network for 0.5 s), and one that hit an error since was closed
and discarded by the pool on its return. The pool hands out its idle connections in turn,
so at a few hundred checkouts a second each is back within RECENT and skips the check.

Django builds the pool with its own check (or none), so the check is set on the pool it
built (`aiim_project.compat.psycopg_pool`).
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
