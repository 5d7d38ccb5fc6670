"""The test database pytest-django created, as a URL for a child process."""

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
