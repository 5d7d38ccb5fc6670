"""Group commit of the runs' chunk writes: every flush that arrives while one transaction is
in flight goes into the next one. With 50 runs flushing every ASSISTANT_CHUNK_MS this is a
few transactions a second instead of a thousand, and the worker threads stay free
(docs/assistants.md, "Cost").

A reply's first write (a stream start: a conversation lock and a seq each) does not join the
group: each is its own transaction, up to STARTS_AT_ONCE of them beside the group commit, so
a burst of replies starting neither waits behind one long transaction nor holds up the
chunks of replies already streaming. A run's writes stay in order: its runner awaits each."""

from __future__ import annotations

import asyncio
import logging
from functools import partial

from aiim_project.core.db import in_worker

from . import execution
from .execution import ChunkWrite

logger = logging.getLogger("aiim.assistants")


STARTS_AT_ONCE = 4


def _log_unawaited_failure(run_id: str, task: asyncio.Task) -> None:
    # Read here too: a run cancelled meanwhile (a stop) no longer awaits its start's outcome.
    if not task.cancelled() and task.exception() is not None:
        logger.info("chunk write of run %s failed: %s", run_id, type(task.exception()).__name__)


class ChunkWriter:
    def __init__(self, owner: str):
        self.owner = owner
        self._pending: list[tuple[ChunkWrite, asyncio.Future]] = []
        self._busy = False
        self._starts = asyncio.Semaphore(STARTS_AT_ONCE)

    async def write(self, write: ChunkWrite) -> bool:
        """True once the write committed; False if the run is no longer this runner's.
        Raises what a write of this run alone raises (AiimError: too large, not a member)."""
        if write.start:
            # Shielded: a run cancelled meanwhile (a stop) lets its start commit or fail whole.
            start = asyncio.get_running_loop().create_task(self._start(write))
            start.add_done_callback(partial(_log_unawaited_failure, write.run_id))
            return await asyncio.shield(start)
        future = asyncio.get_running_loop().create_future()
        self._pending.append((write, future))
        if not self._busy:
            self._busy = True
            asyncio.get_running_loop().create_task(self._drain())
        # Shielded: a run cancelled meanwhile (a stop) leaves its write to the batch.
        return await asyncio.shield(future)

    async def _start(self, write: ChunkWrite) -> bool:
        async with self._starts:
            return await in_worker(execution.write_chunk)(owner=self.owner, write=write)

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    results = await in_worker(execution.write_chunks)(owner=self.owner, writes=[w for w, _ in batch])
                except Exception:
                    # One write failed and rolled the batch back: each run on its own, so only
                    # that run sees its error.
                    await self._one_by_one(batch)
                    continue
                for (_, future), ok in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(ok)
        finally:
            self._busy = False

    async def _one_by_one(self, batch: list[tuple[ChunkWrite, asyncio.Future]]) -> None:
        for write, future in batch:
            try:
                ok = await in_worker(execution.write_chunk)(owner=self.owner, write=write)
            except Exception as exc:
                if not future.done():
                    future.set_exception(exc)
                else:
                    logger.info("chunk write of run %s failed: %s", write.run_id, type(exc).__name__)
            else:
                if not future.done():
                    future.set_result(ok)
