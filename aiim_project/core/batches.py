"""Calls coalesced per event loop: whatever queued while one batch ran is the next batch
(subscription reads, presence leases). Under a storm of connects, one round trip serves
hundreds of callers instead of one each (docs/gateway.md, "Batched subscription reads").
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

R = TypeVar("R")


class Batcher(Generic[R]):
    """`call(request)` resolves with the request's result from `run_batch(requests)`, which
    returns one result or exception per request. A request is served by a batch that starts
    after it was queued: what the caller did before queuing happens before the batch."""

    def __init__(self, run_batch: Callable[[list[R]], Awaitable[list[Any]]], max_batch: int) -> None:
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._queue: list[tuple[R, asyncio.Future]] = []
        self._runner: asyncio.Task | None = None
        self.batches = 0  # for tests: batches run

    async def call(self, request: R) -> Any:
        return await self.submit(request)

    def submit(self, request: R) -> asyncio.Future:
        """Queue `request` now (its place in the order is taken here); the future resolves
        with its result."""
        fut = asyncio.get_running_loop().create_future()
        self._queue.append((request, fut))
        if self._runner is None:
            # Started on a later turn of the loop: requests queued in this one share its batch.
            self._runner = asyncio.create_task(self._run())
        return fut

    async def _run(self) -> None:
        batch: list[tuple[R, asyncio.Future]] = []
        try:
            while self._queue:
                batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
                batch = [(r, f) for r, f in batch if not f.done()]  # a waiter cancelled meanwhile
                if not batch:
                    continue
                self.batches += 1
                try:
                    results = await self._run_batch([r for r, _ in batch])
                except Exception as exc:
                    results = [exc] * len(batch)
                for (_, fut), result in zip(batch, results, strict=True):
                    if fut.done():
                        continue
                    if isinstance(result, BaseException):
                        fut.set_exception(result)
                    else:
                        fut.set_result(result)
        except BaseException as exc:  # cancelled with the loop: nobody waits forever
            for _, fut in [*batch, *self._queue]:
                if not fut.done():
                    fut.set_exception(exc if isinstance(exc, Exception) else ConnectionError("batches stopped"))
            self._queue.clear()
            raise
        finally:
            self._runner = None
