"""The pool check of aiim_project.postgres: a round trip only for a connection idle a while,
and a connection that died while idle is still replaced before anyone uses it."""

from __future__ import annotations

import pytest
from django.db import connection
from psycopg_pool import ConnectionPool

from aiim_project.postgres import base

pytestmark = pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL backend only")


class _Conn:
    """Stands in for a pooled connection: only its identity matters to the check."""


def test_a_connection_handed_out_recently_is_not_checked_again(monkeypatch):
    checked = []
    monkeypatch.setattr(ConnectionPool, "check_connection", staticmethod(checked.append))
    clock = [100.0]
    monkeypatch.setattr(base.time, "monotonic", lambda: clock[0])
    conn = _Conn()
    base.check_unless_recent(conn)  # never seen: checked
    clock[0] += base.RECENT / 2
    base.check_unless_recent(conn)  # in use a moment ago: not checked
    clock[0] += base.RECENT + 0.01
    base.check_unless_recent(conn)  # idle longer than RECENT: checked again
    assert checked == [conn, conn]


def test_the_pool_uses_the_check():
    assert connection.pool._check is base.check_unless_recent


@pytest.mark.django_db(transaction=True)
def test_a_pooled_connection_killed_while_idle_is_replaced(monkeypatch):
    monkeypatch.setattr(base, "RECENT", 0.0)  # every checkout counts as after a long idle
    connection.ensure_connection()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    connection.close()  # back to the pool
    with connection.pool.connection() as other:  # a different connection kills the idle one
        if other.execute("SELECT pg_backend_pid()").fetchone()[0] == pid:
            pytest.skip("the pool handed the same connection back")
        other.execute("SELECT pg_terminate_backend(%s)", [pid])
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            assert cursor.fetchone() == (1,)
    finally:
        # If the pool handed out another connection, the dead one is still idle in it, and a
        # later test could get it within RECENT of its last checkout, unchecked.
        connection.close()
        connection.pool.check()
