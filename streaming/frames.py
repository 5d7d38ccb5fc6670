"""WebSocket frame handlers of this app, merged into the gateway's table at start-up.
Only a stream's first chunk is rate limited (docs/streaming.md, "Rate limiting").
"""

from __future__ import annotations

from typing import Any

from aiim_project.core.checks import check_tenant
from aiim_project.core.db import in_worker
from aiim_project.core.errors import Invalid
from aiim_project.core.frames import Connection, FrameSpec
from messaging.frames import of_own_tenant

from . import reaper, selectors, services


async def stream_chunk(conn: Connection, frame: dict[str, Any]) -> dict[str, Any]:
    check_tenant(conn.tenant, frame.get("tenant_id"))
    ids = {"conversation_id": frame["conversation_id"], "client_msg_id": frame["client_msg_id"]}
    services.check_stream_ids(**ids)  # before the look-up: PostgreSQL refuses NUL in a query
    reaper.ensure_running()
    write = {"chunk": frame.get("chunk"), "chunk_index": frame.get("chunk_index"), "stream_end": frame.get("stream_end", False)}
    # On a worker thread, like send_msg: streams of different connections write in
    # parallel (one connection's chunks still come one at a time).
    if write["chunk_index"] not in (None, 0):
        # A chunk with a later index cannot start a stream: no look-up, no rate limit.
        result = await in_worker(services.stream_append_next)(tenant=conn.tenant, sender=conn.user_id, **ids, **write, hold_event=True)
        if result.publish is not None:  # committed: the ack first, then the fan-out work
            conn.after_reply(result.publish)
        return _ack(result)
    if not await in_worker(selectors.stream_exists)(tenant=conn.tenant, sender=conn.user_id, **ids):
        await conn.rate_limit()
    return _ack(await in_worker(services.stream_append)(tenant=conn.tenant, sender=conn.user_id, **ids, **write))


def _ack(result: services.ChunkResult) -> dict[str, Any]:
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


async def stream_chunk_run(conn: Connection, frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Queued frames of one stream: acks of the longest prefix `stream_append_run` applies;
    the gateway hands the rest to `stream_chunk` (docs/streaming.md, "Runs")."""
    taken = of_own_tenant(conn, frames)
    if not taken:
        return []
    ids = {"conversation_id": frames[0]["conversation_id"], "client_msg_id": frames[0]["client_msg_id"]}
    try:
        services.check_stream_ids(**ids)  # one stream: the gateway batches frames with equal ids
    except Invalid:
        return []
    reaper.ensure_running()
    results = await in_worker(services.stream_append_run)(
        tenant=conn.tenant,
        sender=conn.user_id,
        **ids,
        chunks=[
            services.ChunkInput(chunk=f.get("chunk"), chunk_index=f.get("chunk_index"), stream_end=f.get("stream_end", False))
            for f in taken
        ],
    )
    return [_ack(result) for result in results]


async def stream_abort(conn: Connection, frame: dict[str, Any]) -> dict[str, Any]:
    check_tenant(conn.tenant, frame.get("tenant_id"))
    message = await in_worker(services.stream_abort)(
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
    # A stream's queued chunks are applied in one transaction (one event, an ack each).
    "stream_chunk": FrameSpec(
        handler=stream_chunk,
        waits_for_fanout=True,
        required={"conversation_id": str, "client_msg_id": str},
        batch=stream_chunk_run,
        batch_key=("conversation_id", "client_msg_id"),
    ),
    "stream_abort": FrameSpec(handler=stream_abort, waits_for_fanout=True, required={"conversation_id": str, "client_msg_id": str}),
}
