"""Runs of queued frames (`FrameSpec.batch`): the send and stream runs (group commit): one
transaction and one fan-out for a client's pipelined frames, each answered in order
(docs/gateway.md, "Frames", runs of queued frames).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, Protocol

from aiim_project.core import ratelimit
from aiim_project.core.frames import FrameSpec

from . import parsing
from .socket import Socket

logger = logging.getLogger("aiim.gateway")

# At most this many queued frames go to one FrameSpec.batch call.
MAX_RUN = 64
# How long a run whose client had more frames queued waits for the next ones (seconds).
RUN_LINGER = 0.001
# A run waits only if it is shorter than the longest of this many of its connection's last runs.
RECENT_RUNS = 8


class Connection(Protocol):
    """What a run needs of its connection (the consumer)."""

    tenant: str
    user_id: str
    socket: Socket

    @property
    def open(self) -> bool: ...

    def touch(self) -> None: ...

    def flow_control(self) -> None: ...

    def lookup(self, frame: dict) -> FrameSpec: ...

    async def handle(self, frame: dict, spec: FrameSpec, *, admitted: bool = False) -> None: ...

    async def reply(self, frame: dict, reply: dict) -> None: ...


class Runs:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        # Lengths of this connection's latest runs (see `take`).
        self._recent: deque[int] = deque(maxlen=RECENT_RUNS)
        # Messages taken from Daphne's queue for a run and not handled yet (flow control).
        self.held = 0
        # A queued message `take` counted against the rate limit and that was refused: the
        # ordinary path answers it with that refusal instead of counting it a second time.
        self.refused: tuple[dict, BaseException] | None = None

    def take_refusal(self, message: dict) -> BaseException | None:
        refused, self.refused = self.refused, None
        return refused[1] if refused is not None and refused[0] is message else None

    async def take(self, frame: dict, spec: FrameSpec, pending: deque[dict]) -> list[dict]:
        """`frame` and the frames queued right behind it that `spec.batch` may take with it:
        same type, required fields present, equal `batch_key` fields. The first queued message
        that does not fit is left in `pending` (handled next, in order). Under a server other
        than Daphne (the test communicator) there is no queue to look at: the run is `frame`."""
        queue = self._conn.socket.inbound_queue()
        run = [frame]
        if queue is None:
            return run
        key = [frame.get(name) for name in spec.batch_key]
        pipelined = not queue.empty()
        if not pipelined and not pending:
            # Frames sent back to back may already be in the socket buffer: Twisted reads
            # them in a callback of a later loop turn. Two turns let them join this run
            # instead of each paying a transaction (docs/gateway.md, runs of queued frames).
            for _ in range(2):
                await asyncio.sleep(0)
        while len(run) < MAX_RUN and not pending:
            try:
                message = queue.get_nowait()
            except asyncio.QueueEmpty:
                if not pipelined or len(run) >= max(self._recent, default=0):
                    break
                # Frames were already waiting when this run began and it is shorter than the
                # client's recent runs: its window is split over two runs. A brief wait for
                # the other half merges them again (docs/gateway.md, runs of queued frames).
                pipelined = False
                try:
                    message = await asyncio.wait_for(queue.get(), RUN_LINGER)
                except TimeoutError:
                    break
            if not await self._join(message, frame, key, spec, run, pending):
                break
        self._recent.append(len(run))
        return run

    async def _join(self, message: dict, frame: dict, key: list, spec: FrameSpec, run: list[dict], pending: deque[dict]) -> bool:
        """Add a queued message to `run` if it fits; otherwise leave it in `pending`."""
        self.held += 1
        queued = parsing.peek(message)
        if (
            queued is None
            or queued.get("type") != frame["type"]
            or [queued.get(name) for name in spec.batch_key] != key
            or not parsing.has_required(queued, spec.required)
        ):
            pending.append(message)
            return False
        if spec.rate_limited:
            # Each frame of a run counts against the limit as it would alone; one that
            # is over it ends the run and gets its error on the ordinary path.
            try:
                await ratelimit.acheck(self._conn.tenant, self._conn.user_id)
            except Exception as exc:
                self.refused = (message, exc)
                pending.append(message)
                return False
        # What the ordinary path does for every frame before its handler runs.
        self._conn.flow_control()
        self._conn.touch()
        self._conn.lookup(queued)  # counts it in WS_FRAMES_IN
        run.append(queued)
        return True

    async def handle(self, spec: FrameSpec, run: list[dict[str, Any]]) -> None:
        """Each frame of the run gets its reply (or error) in order: a prefix through
        `spec.batch` (its replies sent after it returns, so an ack follows its commit), the
        first frame it left through the ordinary handler, then the rest the same way again."""
        conn = self._conn
        taken = len(run) - 1  # all but the first came from Daphne's queue
        try:
            while run:
                try:
                    replies = await spec.batch(conn, run) if len(run) > 1 else []
                except Exception as exc:  # nothing was applied: the ordinary path answers each frame
                    logger.info("ws batch refused, one frame at a time: %s", type(exc).__name__)
                    replies = []
                for frame, reply in zip(run, replies):
                    if conn.open:
                        await conn.reply(frame, reply)
                run = run[len(replies):]
                if run:
                    frame = run.pop(0)
                    if conn.open:
                        await conn.handle(frame, spec, admitted=True)
        finally:
            self.held -= taken
        conn.flow_control()  # the run may have emptied the queue: resume reading if paused
