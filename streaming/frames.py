"""WebSocket frame handlers of this app, merged into the gateway's table at start-up.

Not rate limited: `FrameSpec.rate_limited` counts every frame of a type, and an AI reply
sends tens of chunks a second. Only a chunk that starts a stream should count, and the
limiter lives in aiim_project, which this app may not import (see docs/streaming.md).
"""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async

from messaging.db import in_worker
from messaging.frames import Connection, FrameSpec
from messaging.services import check_tenant

from . import reaper, services


async def stream_chunk(conn: Connection, frame: dict[str, Any]) -> dict[str, Any]:
    check_tenant(conn.tenant, frame.get("tenant_id"))
    reaper.ensure_running()
    # On a worker thread, like send_msg: streams of different connections write in
    # parallel (one connection's chunks still come one at a time).
    result = await in_worker(services.stream_append)(
        tenant=conn.tenant,
        sender=conn.user_id,
        conversation_id=frame.get("conversation_id"),
        client_msg_id=frame.get("client_msg_id"),
        chunk=frame.get("chunk"),
        chunk_index=frame.get("chunk_index"),
        stream_end=frame.get("stream_end", False),
    )
    message = result.message
    return {
        "type": "ack",
        "event": "stream.sent",
        "conversation_id": message.conversation_id,
        "message_id": message.id,
        "seq": message.seq,
        "client_msg_id": message.client_msg_id,
        "chunk_index": result.chunk_index,
        "stream_end": result.stream_end,
    }


async def stream_abort(conn: Connection, frame: dict[str, Any]) -> dict[str, Any]:
    check_tenant(conn.tenant, frame.get("tenant_id"))
    message = await database_sync_to_async(services.stream_abort)(
        tenant=conn.tenant,
        sender=conn.user_id,
        conversation_id=frame.get("conversation_id"),
        client_msg_id=frame.get("client_msg_id"),
    )
    return {
        "type": "ack",
        "event": "stream.aborted",
        "conversation_id": message.conversation_id,
        "message_id": message.id,
        "seq": message.seq,
        "client_msg_id": message.client_msg_id,
    }


FRAMES: dict[str, FrameSpec] = {
    # `chunk` is checked by the service: the gateway's required check refuses "", and an
    # empty chunk is how a client ends a stream without more text.
    "stream_chunk": FrameSpec(handler=stream_chunk, required={"conversation_id": str, "client_msg_id": str}),
    "stream_abort": FrameSpec(handler=stream_abort, required={"conversation_id": str, "client_msg_id": str}),
}
