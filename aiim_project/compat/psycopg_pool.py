"""psycopg_pool: sets the pool's private `_check` (the check run before handing a connection
out), which Django offers no way to pass (docs/internals.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def set_check(pool: Any, check: Callable[[Any], None]) -> None:
    if getattr(pool, "_check", None) is not check:
        pool._check = check
