"""Messaging's WebSocket frames (the interface: `aiim_project.core.frames`)."""

from __future__ import annotations

from typing import Any

from aiim_project.core import events
from aiim_project.core.checks import check_tenant
from aiim_project.core.db import in_worker
from aiim_project.core.errors import Invalid, TenantMismatch
from aiim_project.core.frames import Connection, FrameSpec
from aiim_project.core.metrics import MESSAGES_CREATED

from . import selectors, services

TYPING_STATES = ("typing", "thinking", "idle")


def _optional_seq(frame: dict[str, Any], name: str) -> int | None:
    value = frame.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise Invalid(f"{name} must be a non-negative integer.", errors={name: ["Expected a non-negative integer."]})
    return value


async def subscribe(conn: Connection, frame: dict[str, Any]) -> dict[str, Any]:
    check_tenant(conn.tenant, frame.get("tenant_id"))
    return await conn.subscribe(frame["conversation_id"], _optional_seq(frame, "since_seq"))


async def unsubscribe(conn: Connection, frame: dict[str, Any]) -> dict[str, Any]:
    await conn.unsubscribe(frame["conversation_id"])
    return {"type": "unsubscribed", "conversation_id": frame["conversation_id"]}


async def send_msg(conn: Connection, frame: dict[str, Any]) -> dict[str, Any]:
    check_tenant(conn.tenant, frame.get("tenant_id"))
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
            check_tenant(conn.tenant, frame.get("tenant_id"))
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
        await in_worker(selectors.conversation_for_member)(
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
