"""The test database pytest-django created: as a URL for a child process, and the plan of a
statement on it."""

from __future__ import annotations


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
