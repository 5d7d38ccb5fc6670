"""The test database pytest-django created: as a URL for a child process, the plan of a
statement on it, and a row lock held from another connection."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


def database_url() -> str:
    from django.db import connection

    sd = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{sd['NAME']}"
    auth = sd["USER"] or "postgres"
    if sd.get("PASSWORD"):
        auth += f":{sd['PASSWORD']}"
    return f"postgres://{auth}@{sd['HOST'] or '127.0.0.1'}:{sd['PORT'] or 5432}/{sd['NAME']}"


def query_plan(sql: str, params: list | None = None, *, analyze: str) -> str:
    """The plan of `sql` on the test database, on statistics for table `analyze` as
    autovacuum keeps them (without them PostgreSQL prices every index of a small table alike;
    SQLite plans without)."""
    from django.db import connection

    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"ANALYZE {connection.ops.quote_name(analyze)}")
        cursor.execute(("EXPLAIN " if connection.vendor == "postgresql" else "EXPLAIN QUERY PLAN ") + sql, params or [])
        return "\n".join(" ".join(str(part) for part in row) for row in cursor.fetchall())


@asynccontextmanager
async def row_locked_elsewhere(table: str, column: str, value: str) -> AsyncIterator[None]:
    """PostgreSQL: the rows of `table` whose `column` is `value` locked (FOR UPDATE) by
    another connection, in a thread, until the block ends."""
    import psycopg

    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with psycopg.connect(database_url()) as other:
            other.execute(f"SELECT 1 FROM {table} WHERE {column} = %s FOR UPDATE", [value])
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert await asyncio.to_thread(held.wait, 5), "the row lock was not taken"
        yield
    finally:
        release.set()
        await asyncio.to_thread(holder.join, 10)
