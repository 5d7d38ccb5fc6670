"""WebSocket frame handlers of this app, merged into the gateway's table at start-up."""

from __future__ import annotations

from typing import Any

from aiim_project.core.checks import check_tenant
from aiim_project.core.db import in_worker
from aiim_project.core.frames import Connection, FrameSpec

from . import services
from .models import CursorKind


async def delivered(conn: Connection, frame: dict[str, Any]) -> dict[str, Any]:
    check_tenant(conn.tenant, frame.get("tenant_id"))
    update = await in_worker(services.cursor_advance)(
        tenant=conn.tenant,
        user_id=conn.user_id,
        conversation_id=frame.get("conversation_id"),
        kind=CursorKind.DELIVERED,
        seq=frame.get("up_to_seq"),
        message_id=frame.get("message_id"),
    )
    return {"type": "ack", "event": "receipt.delivered", "conversation_id": update.conversation_id, "up_to_seq": update.target_seq}


async def read(conn: Connection, frame: dict[str, Any]) -> dict[str, Any]:
    check_tenant(conn.tenant, frame.get("tenant_id"))
    services.check_claimed_user(conn.user_id, frame.get("user_id"))
    update = await in_worker(services.cursor_advance)(
        tenant=conn.tenant,
        user_id=conn.user_id,
        conversation_id=frame.get("conversation_id"),
        kind=CursorKind.READ,
        seq=frame.get("last_read_seq"),
        message_id=frame.get("message_id"),
        seq_field="last_read_seq",
    )
    return {"type": "ack", "event": "receipt.read", "conversation_id": update.conversation_id, "last_read_seq": update.target_seq}


# Rate limited like every REST write: each accepted receipt fans out to the conversation.
FRAMES: dict[str, FrameSpec] = {
    "delivered": FrameSpec(handler=delivered, rate_limited=True, waits_for_fanout=True, required={"conversation_id": str}),
    "read": FrameSpec(handler=read, rate_limited=True, waits_for_fanout=True, required={"conversation_id": str}),
}
