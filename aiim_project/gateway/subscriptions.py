"""A connection's subscriptions: joining the hub, the snapshot and replay, one `OrderedDelivery`
per conversation, and the events the hub hands over (docs/gateway.md, "Subscribe, replay and order").
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import orjson
from django.conf import settings

from aiim_project.core import events
from messaging import selectors

from . import delivery, reads
from .hub import FRAMES_OUT_EVENT, Hub, Member, Wire
from .reads import get_reads

logger = logging.getLogger("aiim.gateway")

# Copies of one event reaching a connection through two groups (conversation and user).
RECENT_PERSONAL = 128


async def load_stored(
    tenant: str, user_id: str, conversation_id: str, after_seq: int, up_to_seq: int, limit: int
) -> list[delivery.StoredMessage]:
    """Reads are rare (subscribe tail, gaps, resync) and follow lost events: they check that the
    member.left ending this subscription was not among them. Coalesced with the process's
    other subscriptions' reads (`reads.py`): after a storm of subscribes, their tail checks
    ask for the same range."""
    return await get_reads().loads.call(reads.Load(tenant, user_id, conversation_id, after_seq, up_to_seq, limit))


@dataclass
class Opened:
    sub: delivery.OrderedDelivery
    replay: list[delivery.StoredMessage]
    last_seq: int
    recovered: bool  # False: more than WS_RECOVERY_LIMIT were missed, the client pages over REST
    # The join found the group's subscription not yet confirmed by Redis: an event published
    # before Redis ran it may be missing; one read WS_GAP_WAIT_MS later finds it.
    tail_check: bool


async def open_subscription(
    *,
    hub: Hub,
    member: Member,
    tenant: str,
    user_id: str,
    conversation_id: str,
    since_seq: int | None,
    send: Callable[[str], None],
    load_chunks: delivery.ChunkLoader | None,
    on_revoked: Callable[[], Awaitable[None]],
    leave_on_failure: bool = True,
) -> Opened:
    """Join, then read the snapshot (the WebSocket's and the SSE stream's one subscribe
    sequence); raises the selector's NotFound/Forbidden after leaving."""
    group = events.conversation_group(tenant, conversation_id)
    try:
        # Join BEFORE reading: every seq above the snapshot then reaches the member.
        confirmed = await hub.join(group, member)
        # One read for every subscribe of the process queued meanwhile (`reads.py`); it
        # starts after this join, which is all the ordering needs.
        snap = await get_reads().snapshots.call(
            (selectors.SnapshotRequest(tenant, user_id, conversation_id, since_seq), settings.WS_RECOVERY_LIMIT)
        )
        last_seq, rows = snap.last_seq, snap.rows
    except BaseException:
        if leave_on_failure:
            await hub.leave(group, member)
        raise
    replay = rows or []
    sub = delivery.OrderedDelivery(
        send=send,
        load=partial(load_stored, tenant, user_id, conversation_id),
        load_chunks=load_chunks,
        next_seq=(replay[0].seq if replay else last_seq + 1),
        gap_wait=settings.WS_GAP_WAIT_MS / 1000,
        on_revoked=on_revoked,
    )
    return Opened(sub=sub, replay=replay, last_seq=last_seq, recovered=rows is not None, tail_check=not confirmed)


async def start(sub: delivery.OrderedDelivery, replay: list[delivery.StoredMessage], last_seq: int) -> None:
    """Send the replay, then continue live after the snapshot's last seq."""
    await sub.replay(replay)
    sub.next_seq = max(sub.next_seq, last_seq + 1)


async def check_tail_later(sub: delivery.OrderedDelivery) -> None:
    await asyncio.sleep(settings.WS_GAP_WAIT_MS / 1000)
    try:
        await sub.check_tail()
    except Exception as exc:
        logger.warning("subscription tail check failed: %s", type(exc).__name__)


class Subscriptions:
    """`member` is what the hub knows the connection as; `emit` writes a frame to its socket;
    `send_text` sends a reply frame of a kind; `spawn` starts a task the connection cancels on close."""

    def __init__(
        self,
        *,
        tenant: str,
        user_id: str,
        hub: Hub,
        member: Member,
        emit: Callable[[str, Wire | None], bool],
        send_text: Callable[[str, str], Awaitable[None]],
        spawn: Callable[[Any], None],
        load_chunks: delivery.ChunkLoader | None,
    ) -> None:
        self.tenant, self.user_id = tenant, user_id
        self._hub, self._member = hub, member
        self._emit, self._send_text, self._spawn = emit, send_text, spawn
        self._load_chunks = load_chunks
        self.by_conversation: dict[str, delivery.OrderedDelivery] = {}
        self._recent_personal: OrderedDict[str, None] = OrderedDict()
        # Set while the hub's pass hands the connection an event (see `hub_event`).
        self._wire: Wire | None = None
        self._hub_sent = 0

    def group(self, conversation_id: str) -> str:
        return events.conversation_group(self.tenant, conversation_id)

    def is_subscribed(self, conversation_id: str) -> bool:
        return conversation_id in self.by_conversation

    async def subscribe(self, conversation_id: str, since_seq: int | None) -> tuple[dict[str, Any], Callable[[], Awaitable[None]]]:
        """The `subscribed` reply, and the step that sends the replay once it is out."""
        opened = await open_subscription(
            hub=self._hub,
            member=self._member,
            tenant=self.tenant,
            user_id=self.user_id,
            conversation_id=conversation_id,
            since_seq=since_seq,
            send=self._emit_event,
            load_chunks=self._load_chunks,
            on_revoked=partial(self._revoked, conversation_id),
            leave_on_failure=conversation_id not in self.by_conversation,
        )
        old = self.by_conversation.pop(conversation_id, None)
        if old is not None:
            old.close()
        self.by_conversation[conversation_id] = opened.sub
        reply: dict[str, Any] = {"type": "subscribed", "conversation_id": conversation_id, "last_seq": opened.last_seq}
        if not opened.recovered:
            reply["recovered"] = False
        return reply, partial(self._start, opened)

    async def _start(self, opened: Opened) -> None:
        await start(opened.sub, opened.replay, opened.last_seq)
        if opened.tail_check:
            self._spawn(check_tail_later(opened.sub))

    async def _revoked(self, conversation_id: str) -> None:
        """A read found this user is no longer a member: end the subscription and say so."""
        sub = self.by_conversation.pop(conversation_id, None)
        if sub is None:
            return
        sub.close()
        await self._hub.leave(self.group(conversation_id), self._member)
        body = {"type": "error", "code": "forbidden", "message": "You are no longer a member of this conversation.", "conversation_id": conversation_id}
        await self._send_text(orjson.dumps(body).decode(), "error")

    async def unsubscribe(self, conversation_id: str) -> None:
        sub = self.by_conversation.pop(conversation_id, None)
        if sub is None:  # idempotent, as in the original AIIM: the goal state holds already
            return
        sub.close()
        await self._hub.leave(self.group(conversation_id), self._member)

    def close_all(self) -> list[str]:
        """End every subscription; returns their groups, for the connection to leave."""
        groups = []
        for conversation_id, sub in self.by_conversation.items():
            sub.close()
            groups.append(self.group(conversation_id))
        self.by_conversation.clear()
        return groups

    def resync(self) -> None:
        """Whatever was published while the channel layer was away is gone: every
        subscription re-reads its tail from the database."""
        for sub in self.by_conversation.values():
            self._spawn(check_tail_later(sub))

    # -- events from the hub ----------------------------------------------------------

    def hub_event(self, message: dict, wire: Wire) -> int:
        """Hand one event to this connection; returns how many frames it sent now."""
        conversation_id = message["conversation_id"]
        if message.get("seq") is None:
            about = message.get("user_id")
            if about is None:  # a writer that sets no route field: the data names the user
                about = orjson.loads(message["frame"])["data"].get("user_id")
            if about == self.user_id:
                return self._personal_event(conversation_id, message, wire)
        sub = self.by_conversation.get(conversation_id)
        if sub is None:
            return 0
        self._wire, self._hub_sent = wire, 0
        try:
            sub.offer(message)
        finally:
            self._wire = None
        return self._hub_sent

    def _emit_event(self, text: str) -> None:
        in_hub = self._wire is not None
        if self._emit(text, self._wire if in_hub and self._wire.text is text else None):
            if in_hub:  # counted by the hub, once per event
                self._hub_sent += 1
            else:
                FRAMES_OUT_EVENT.inc()

    def _personal_event(self, conversation_id: str, message: dict, wire: Wire) -> int:
        """An event about this user: it may come twice (conversation and user group), and
        it reaches this connection whether or not it is subscribed."""
        if message["event"] == "typing":  # the typist's own devices do not need it
            return 0
        frame = message["frame"]
        if frame in self._recent_personal:
            return 0
        self._recent_personal[frame] = None
        if len(self._recent_personal) > RECENT_PERSONAL:
            self._recent_personal.popitem(last=False)
        if message["event"] == "member.left":
            sub = self.by_conversation.pop(conversation_id, None)
            if sub is not None:
                sub.close()
                self._hub.leave_soon(self.group(conversation_id), self._member)
        return 1 if self._emit(frame, wire) else 0
