"""psycopg_pool: the check a pool runs on a connection before handing it out.

Django builds the pool with its own check (or none) and offers no way to pass another, so
ours is set on the pool it built: psycopg_pool keeps it in `_check`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def set_check(pool: Any, check: Callable[[Any], None]) -> None:
    if getattr(pool, "_check", None) is not check:
        pool._check = check
