"""One object per event loop: asyncio objects (Redis connections, tasks, queues) cannot cross
loops, and tests run one loop per test (Daphne one per process). Closed loops' entries are dropped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class PerLoop(Generic[T]):
    def __init__(self, factory: Callable[[asyncio.AbstractEventLoop], T]) -> None:
        self._factory = factory
        self._items: dict[asyncio.AbstractEventLoop, T] = {}

    def get(self, loop: asyncio.AbstractEventLoop | None = None) -> T:
        """The running (or given) loop's object, made on first use."""
        loop = loop or asyncio.get_running_loop()
        item = self._items.get(loop)
        if item is None:
            self._prune()
            item = self._items[loop] = self._factory(loop)
        return item

    def peek(self, loop: asyncio.AbstractEventLoop) -> T | None:
        return self._items.get(loop)

    def set(self, loop: asyncio.AbstractEventLoop, item: T) -> None:
        self._prune()
        self._items[loop] = item

    def _prune(self) -> None:
        for old in [lp for lp in self._items if lp.is_closed()]:
            del self._items[old]
