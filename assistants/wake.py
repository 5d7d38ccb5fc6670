"""This process's runners, reached from the send path without importing them (the trigger
must not load the model client): wake one (a run was queued or stopped here), or hand it
runs its send transaction started (docs/assistants.md, "Starting at once")."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

from aiim_project.compat.asgiref import server_loop


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


def wake() -> None:
    """From a worker thread of a loop or from the loop; without a loop, every runner here."""
    loop = _calling_loop()
    targets = [loop] if loop is not None and loop in _runners else list(_runners)
    for target in targets:
        runner = _runners.get(target)
        if runner is not None and not target.is_closed():
            target.call_soon_threadsafe(runner.wake)


def hand_over(loop: asyncio.AbstractEventLoop, runner: LocalRunner, items: Sequence[tuple[Any, Any]]) -> None:
    """Give `runner` the (run, prepared) pairs it was made the owner of. A loop closed
    meanwhile leaves them to the lease reaper, like a runner that died."""
    try:
        loop.call_soon_threadsafe(runner.adopt, items)
    except RuntimeError:  # closed meanwhile
        pass
