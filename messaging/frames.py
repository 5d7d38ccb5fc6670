"""The interface every app's WebSocket frame handlers implement, and messaging's own table.

Each app exposes `FRAMES: dict[str, FrameSpec]` in its `frames.py`; the gateway
(`aiim_project.gateway`) merges them into one table at start-up, so adding a frame never
touches the gateway. A handler gets the caller and the parsed frame, calls one service
(through `database_sync_to_async` or the async ORM), and returns the ack frame (or None for
no answer). It raises `messaging.errors.AiimError` for a bad frame; the gateway renders that
as an error frame with the frame's `req_id` and keeps the connection open.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from channels.db import database_sync_to_async

from . import events, selectors, services
from .db import in_worker
from .errors import Invalid, TenantMismatch
from .metrics import MESSAGES_CREATED


class Connection(Protocol):
    """What a frame handler may use of the gateway connection."""

    tenant: str
    user_id: str
    conn_id: str

    async def subscribe(self, conversation_id: str, since_seq: int | None) -> dict[str, Any]: ...

    async def unsubscribe(self, conversation_id: str) -> None: ...

    def is_subscribed(self, conversation_id: str) -> bool: ...

    async def rate_limit(self) -> None:
        """Count one write against RATE_LIMIT_PER_SEC, raising RateLimited when over it: for
        a frame that counts only sometimes (a stream's first chunk), where
        `FrameSpec.rate_limited` would count them all."""


Handler = Callable[[Connection, dict[str, Any]], Awaitable[dict[str, Any] | None]]
# Handles a run of frames at once: returns the replies of the frames it handled, a prefix
# of the run (possibly none); the gateway passes the rest to `handler`, one at a time.
BatchHandler = Callable[[Connection, list[dict[str, Any]]], Awaitable[list[dict[str, Any]]]]


@dataclass(frozen=True)
class FrameSpec:
    handler: Handler
    # Counted against RATE_LIMIT_PER_SEC (writes that create work for others).
    rate_limited: bool = False
    # Creates events for others: waits while this process's fan-out lags (see the
    # gateway's fanout_lag), so delivery stays close behind acceptance.
    waits_for_fanout: bool = False
    # Required fields and their types, checked by the gateway before the handler runs.
    required: dict[str, type | tuple[type, ...]] = field(default_factory=dict)
    # Optional: frames of this type the client has already sent (queued behind the one being
    # handled) that agree on the `batch_key` fields go to `batch` together; each still gets
    # its own reply, in order. A `rate_limited` frame of a run is counted against the limit
    # as it would be alone (the run waits once for fan-out lag, before its first frame).
    batch: BatchHandler | None = None
    batch_key: tuple[str, ...] = ()


TYPING_STATES = ("typing", "thinking", "idle")


def _optional_seq(frame: dict[str, Any], name: str) -> int | None:
    value = frame.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise Invalid(f"{name} must be a non-negative integer.", errors={name: ["Expected a non-negative integer."]})
    return value


async def subscribe(conn: Connection, frame: dict[str, Any]) -> dict[str, Any]:
    services.check_tenant(conn.tenant, frame.get("tenant_id"))
    return await conn.subscribe(frame["conversation_id"], _optional_seq(frame, "since_seq"))


async def unsubscribe(conn: Connection, frame: dict[str, Any]) -> dict[str, Any]:
    await conn.unsubscribe(frame["conversation_id"])
    return {"type": "unsubscribed", "conversation_id": frame["conversation_id"]}


async def send_msg(conn: Connection, frame: dict[str, Any]) -> dict[str, Any]:
    services.check_tenant(conn.tenant, frame.get("tenant_id"))
    message, created = await in_worker(services.message_send)(
        tenant=conn.tenant,
        sender=conn.user_id,
        conversation_id=frame["conversation_id"],
        content=frame["content"],
        type=frame.get("msg_type", "text"),
        client_msg_id=frame.get("client_msg_id"),
        reply_to=frame.get("reply_to"),
        metadata=frame.get("metadata"),
    )
    if created:
        MESSAGES_CREATED.labels(via="ws").inc()
    return _sent(message)


def of_own_tenant(conn: Connection, frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The leading frames of a run that pass `check_tenant`: the first that does not ends
    the run, and the one-at-a-time handler answers it."""
    for k, frame in enumerate(frames):
        try:
            services.check_tenant(conn.tenant, frame.get("tenant_id"))
        except TenantMismatch:
            return frames[:k]
    return frames


async def send_msg_run(conn: Connection, frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sends queued on one connection for one conversation, stored in one transaction
    (`services.message_send_run`); the frames it leaves go through `send_msg`."""
    items = [
        services.SendInput(
            content=frame["content"],
            type=frame.get("msg_type", "text"),
            client_msg_id=frame.get("client_msg_id"),
            reply_to=frame.get("reply_to"),
            metadata=frame.get("metadata"),
        )
        for frame in of_own_tenant(conn, frames)
    ]
    if not items:
        return []
    messages = await in_worker(services.message_send_run)(
        tenant=conn.tenant, sender=conn.user_id, conversation_id=frames[0]["conversation_id"], items=items
    )
    if messages:
        MESSAGES_CREATED.labels(via="ws").inc(len(messages))
    return [_sent(message) for message in messages]


def _sent(message: Any) -> dict[str, Any]:
    return {
        "type": "ack",
        "event": "message.sent",
        "conversation_id": message.conversation_id,
        "message_id": message.id,
        "seq": message.seq,
        "client_msg_id": message.client_msg_id,
    }


async def typing(conn: Connection, frame: dict[str, Any]) -> None:
    conversation_id, state = frame["conversation_id"], frame["state"]
    if state not in TYPING_STATES:
        raise Invalid(f"state must be one of {', '.join(TYPING_STATES)}.", errors={"state": ["Invalid choice."]})
    # A live subscription was authorized, and membership changes end it; only a typing
    # frame for an unsubscribed conversation costs a membership query.
    if not conn.is_subscribed(conversation_id):
        await database_sync_to_async(selectors.conversation_for_member)(
            tenant=conn.tenant, user_id=conn.user_id, conversation_id=conversation_id
        )
    # Ephemeral: nothing is stored, so there is no commit to wait for.
    event = events.build(conversation_id, "typing", {"user_id": conn.user_id, "state": state}, user_id=conn.user_id)
    await events.group_send(events.conversation_group(conn.tenant, conversation_id), event)
    return None


async def ping(conn: Connection, frame: dict[str, Any]) -> dict[str, Any]:
    return {"type": "pong"}


async def pong(conn: Connection, frame: dict[str, Any]) -> None:
    return None


FRAMES: dict[str, FrameSpec] = {
    "subscribe": FrameSpec(handler=subscribe, required={"conversation_id": str}),
    "unsubscribe": FrameSpec(handler=unsubscribe, required={"conversation_id": str}),
    "send_msg": FrameSpec(
        handler=send_msg,
        rate_limited=True,
        waits_for_fanout=True,
        required={"conversation_id": str, "content": object},
        batch=send_msg_run,
        batch_key=("conversation_id",),
    ),
    "typing": FrameSpec(handler=typing, rate_limited=True, waits_for_fanout=True, required={"conversation_id": str, "state": str}),
    "ping": FrameSpec(handler=ping),
    "pong": FrameSpec(handler=pong),
}
