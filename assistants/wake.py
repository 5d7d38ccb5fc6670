"""The runners, reached from the send path without importing them (the trigger must not load
the model client): wake them (a run was queued or stopped), or hand this process's runner
runs its send transaction started (docs/assistants.md, "Starting at once"). With Redis, a
wake also reaches the runners of other processes (`manage.py run_assistants` workers, other
Daphne processes), which subscribe to `channel()`: they need not wait for their poll."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Protocol

import redis
from django.conf import settings

from aiim_project.compat.asgiref import server_loop
from aiim_project.core import redis as aiim_redis

logger = logging.getLogger("aiim.assistants")


class LocalRunner(Protocol):
    owner: str

    def free_slots(self) -> int: ...

    def wake(self) -> None: ...

    def adopt(self, items: Sequence[tuple[Any, Any]]) -> None: ...


# The runner of each event loop; its methods are called on that loop (but free_slots).
_runners: dict[asyncio.AbstractEventLoop, LocalRunner] = {}


def register(loop: asyncio.AbstractEventLoop, runner: LocalRunner) -> None:
    for old in [lp for lp in _runners if lp.is_closed()]:
        del _runners[old]
    _runners[loop] = runner


def unregister(loop: asyncio.AbstractEventLoop) -> None:
    _runners.pop(loop, None)


def _calling_loop() -> asyncio.AbstractEventLoop | None:
    """The loop of a worker thread (the ORM under in_worker, a REST request), or the running one."""
    loop = server_loop()
    if loop is None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
    return loop


def local() -> tuple[asyncio.AbstractEventLoop, LocalRunner] | None:
    """The runner on the calling thread's loop, if it runs one and it is open."""
    loop = _calling_loop()
    runner = _runners.get(loop) if loop is not None else None
    if runner is None or loop.is_closed():
        return None
    return loop, runner


def channel() -> str:
    # Pub/sub ignores Redis's database number: the prefix keeps deployments sharing a Redis apart.
    return f"{settings.CHANNEL_LAYER_PREFIX}:assistants:wake"


def wake() -> None:
    """From a worker thread of a loop (a commit hook): this loop's runner, or without one
    every runner here; and, with Redis, every other process's."""
    loop = _calling_loop()
    targets = [loop] if loop is not None and loop in _runners else list(_runners)
    for target in targets:
        runner = _runners.get(target)
        if runner is not None and not target.is_closed():
            target.call_soon_threadsafe(runner.wake)
    client = aiim_redis.sync_client()
    if client is not None:
        try:
            client.publish(channel(), b"")
        except redis.RedisError as exc:  # the runners' poll finds the run all the same
            logger.warning("assistant wake not published: %s", type(exc).__name__)


def hand_over(loop: asyncio.AbstractEventLoop, runner: LocalRunner, items: Sequence[tuple[Any, Any]]) -> None:
    """Give `runner` the (run, prepared) pairs it was made the owner of. A loop closed
    meanwhile leaves them to the lease reaper, like a runner that died."""
    try:
        loop.call_soon_threadsafe(runner.adopt, items)
    except RuntimeError:  # closed meanwhile
        pass
