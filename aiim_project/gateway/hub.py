"""Process-level fan-out: one channel-layer channel per process instead of one per connection,
one hub per event loop. How it works and the ordering it keeps: docs/gateway.md, "Fan-out:
one hub per process".
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any, Protocol

from channels.layers import get_channel_layer

from aiim_project.compat import channels_redis
from aiim_project.core import events, layers
from aiim_project.core.errors import dependency_error_types
from aiim_project.core.metrics import FANOUT_SECONDS, WS_FRAMES_OUT
from aiim_project.core.per_loop import PerLoop

from . import fanout_lag

logger = logging.getLogger("aiim.gateway.hub")

RETRY_PAUSE = 0.2
# Events taken from the layer per loop turn: a burst costs one layer call, and a turn stays short.
RECEIVE_BATCH = 100
FRAMES_OUT_EVENT = WS_FRAMES_OUT.labels("event")
ADD, DISCARD = "add", "discard"


class Member(Protocol):
    def hub_event(self, message: dict, wire: Wire) -> int: ...

    def hub_resync(self) -> None: ...


def text_frame(payload: bytes) -> bytes:
    """An unmasked, unfragmented WebSocket text frame (RFC 6455 5.2), as a server sends it."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return b"\x81\x7e" + n.to_bytes(2, "big") + payload
    return b"\x81\x7f" + n.to_bytes(8, "big") + payload


class Wire:
    """The frame text of one event and, once a socket asks for it, its encoded frame."""

    __slots__ = ("text", "_bytes")

    def __init__(self, text: str) -> None:
        self.text = text
        self._bytes: bytes | None = None

    def frame_bytes(self) -> bytes:
        if self._bytes is None:
            self._bytes = text_frame(self.text.encode())
        return self._bytes


class Hub:
    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.channel: str | None = None
        self._members: dict[str, set[Member]] = {}
        self._in_layer: set[str] = set()
        self._adding: dict[str, asyncio.Future] = {}  # group -> its add in flight
        self._changes: deque[tuple[str, str, asyncio.Future]] = deque()  # (ADD | DISCARD, group, done)
        self._applier: asyncio.Task | None = None
        self._task: asyncio.Task | None = None
        self._start_lock = asyncio.Lock()

    async def _ensure_started(self) -> None:
        if self._task is not None:
            return
        async with self._start_lock:
            if self._task is None:
                self.channel = await self.layer.new_channel(prefix="aiim.hub.")
                self._task = asyncio.create_task(self._receive_loop())
                events.set_local_sink(asyncio.get_running_loop(), events.LocalSink(self.channel, self.deliver))
                fanout_lag.LAG.backlog = self.queued

    def queued(self) -> int:
        """Events the layer holds for this process that the hub has not taken yet (the
        in-memory and pub/sub layers keep a local queue per channel)."""
        return channels_redis.queued(self.layer, self.channel)

    async def join(self, group: str, member: Member) -> bool:
        """Returns once the layer has been asked for `group` (its SUBSCRIBE written): events
        published after Redis has run it reach `member`. True when Redis had confirmed the
        subscription already, so nothing published from now on can miss this process; False
        leaves a window that the subscription's tail check closes."""
        await self._ensure_started()
        self._members.setdefault(group, set()).add(member)
        if group not in self._in_layer:
            added = self._adding.get(group)
            if added is None:
                added = self._adding[group] = self._change(ADD, group)
            try:
                await asyncio.shield(added)
            except BaseException:
                self._forget(group, member)
                raise
        confirmed = getattr(self.layer, "group_confirmed", None)
        return confirmed is not None and confirmed(group)

    async def leave(self, group: str, member: Member) -> None:
        self._forget(group, member)
        if group not in self._in_layer or self._members.get(group):
            return
        self._in_layer.discard(group)
        await asyncio.shield(self._change(DISCARD, group))

    def leave_soon(self, group: str, member: Member) -> None:
        """Stop handing `member` events of `group` now; tell the layer in the background."""
        self._forget(group, member)
        task = asyncio.create_task(self.leave(group, member))
        task.add_done_callback(_log_failure)

    def _forget(self, group: str, member: Member) -> None:
        members = self._members.get(group)
        if members is not None:
            members.discard(member)
            if not members:
                del self._members[group]

    # -- the layer's group membership, changed in batches ---------------------------------
    # A storm of connects and subscribes joins hundreds of groups at once; one SUBSCRIBE per
    # shard for all that queued meanwhile, instead of one lock hand-over and one command
    # each (docs/gateway.md, "Fan-out: one hub per process").

    def _change(self, kind: str, group: str) -> asyncio.Future:
        done = asyncio.get_running_loop().create_future()
        done.add_done_callback(_retrieve)
        self._changes.append((kind, group, done))
        if self._applier is None:
            # Started on a later turn of the loop: the changes queued in this one share it.
            self._applier = asyncio.create_task(self._apply_changes())
        return done

    async def _apply_changes(self) -> None:
        changes: list[tuple[str, str, asyncio.Future]] = []
        try:
            while self._changes:
                # Runs of one kind, in order: an add and a discard of one group never swap.
                kind, changes = self._changes[0][0], []
                while self._changes and self._changes[0][0] == kind:
                    changes.append(self._changes.popleft())
                groups = list(dict.fromkeys(group for _, group, _ in changes))
                try:
                    await self._layer_change(kind, groups)
                except Exception as exc:
                    logger.warning("hub group %s failed: %s", kind, type(exc).__name__)
                    self._settle(changes, exc)
                else:
                    self._settle(changes, None)
        except BaseException:  # cancelled with the loop: nobody waits forever
            self._settle([*changes, *self._changes], ConnectionError("hub stopped"))
            self._changes.clear()
            raise
        finally:
            self._applier = None

    def _settle(self, changes: list[tuple[str, str, asyncio.Future]], error: Exception | None) -> None:
        for kind, group, done in changes:
            if kind == ADD:
                self._adding.pop(group, None)
                if error is None:
                    self._in_layer.add(group)
                    if not self._members.get(group):  # everyone left while it was added
                        self._in_layer.discard(group)
                        self._change(DISCARD, group)
            if not done.done():
                done.set_result(None) if error is None else done.set_exception(error)

    async def _layer_change(self, kind: str, groups: list[str]) -> None:
        """`group_add_many` / `group_discard_many` where the layer has them (pub/sub), else
        one `group_add` / `group_discard` each (the in-memory layer)."""
        many = getattr(self.layer, f"group_{kind}_many", None)
        if many is not None:
            await many(groups, self.channel)
            return
        for group in groups:
            await getattr(self.layer, f"group_{kind}")(group, self.channel)

    async def _receive_loop(self) -> None:
        # The pub/sub layer hands over a burst in one call; the in-memory layer one by one.
        many = getattr(self.layer, "receive_many", None)
        while True:
            try:
                messages = await many(self.channel, RECEIVE_BATCH) if many else [await self.layer.receive(self.channel)]
            except asyncio.CancelledError:
                raise
            except dependency_error_types() as exc:
                # Whatever was published meanwhile may be gone: every subscription re-reads.
                logger.warning("hub receive failed: %s", type(exc).__name__)
                await asyncio.sleep(RETRY_PAUSE)
                self._resync()
                continue
            for message in messages:
                try:
                    self.dispatch(message)
                except Exception:
                    logger.exception("hub dispatch failed")

    def dispatch(self, message: dict) -> None:
        """A message from the channel layer."""
        kind = message.get("type")
        if kind == layers.RESYNC_TYPE:
            self._resync()
            return
        if kind != events.EVENT_TYPE:
            return
        # The lag is read from the layer's copies only, our own included: they wait in the
        # same queue (docs/gateway.md, "Fan-out: one hub per process").
        committed_at = message.get("committed_at")
        if committed_at is not None:
            fanout_lag.LAG.observe(committed_at)
        if message.get("origin") == self.channel:
            return  # handed to `deliver` when it was published
        self.deliver(message)

    def deliver(self, message: dict) -> None:
        """Hand one event to the local members of its group."""
        group = message.get("group")
        members = self._members.get(group) if group is not None else None
        if not members:
            return
        committed_at = message.get("committed_at")
        wire = Wire(message["frame"])
        sent = 0
        # A member may leave while being handed the event (member.left): iterate a copy.
        for member in tuple(members):
            sent += member.hub_event(message, wire)
        if sent:
            FRAMES_OUT_EVENT.inc(sent)
            if committed_at is not None and message["event"] == "message.created":
                FANOUT_SECONDS.observe(max(0.0, time.time() - committed_at))

    def _resync(self) -> None:
        for member in {m for members in self._members.values() for m in members}:
            member.hub_resync()


def _retrieve(done: asyncio.Future) -> None:
    """A change nobody awaits (a discard after everyone left) fails quietly: it was logged."""
    if not done.cancelled():
        done.exception()


def _log_failure(task: asyncio.Future) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning("hub leave failed: %s", type(task.exception()).__name__)


_hubs: PerLoop[Hub] = PerLoop(lambda loop: Hub(get_channel_layer()))


def get_hub() -> Hub:
    return _hubs.get()
