"""Wire shapes of stream events (docs/protocol.md sections 3 and 4), built in one place for the
live path and the gap fill, so both produce exactly the same frame."""

from __future__ import annotations

from typing import Any

from aiim_project.core import events
from messaging.models import Message
from messaging.rendering import iso


def chunk_data(message: Message, *, first: int, last: int, delta: str, stream_end: bool) -> dict[str, Any]:
    return {
        "message_id": message.id,
        "stream_id": message.client_msg_id,
        "seq": message.seq,
        "chunk_index": first,
        "last_chunk_index": last,
        "delta": delta,
        # The original AIIM clients read `chunk`; newer ones read `delta`.
        "chunk": delta,
        "stream_end": stream_end,
        # And the original's `message` object (docs/migrating.md): the same text again.
        "message": {
            "message_id": message.id,
            "sender_id": message.sender_id,
            "type": "stream_chunk",
            "content": {"chunk": delta},
            "created_at": iso(message.created_at),
            "seq": message.seq,
            "stream_end": stream_end,
        },
    }


def chunk_frame(message: Message, *, first: int, last: int, delta: str, stream_end: bool) -> str:
    data = chunk_data(message, first=first, last=last, delta=delta, stream_end=stream_end)
    return events.event_frame(message.conversation_id, "message.stream_chunk", data)


def chunk_event(message: Message, *, first: int, last: int, delta: str, stream_end: bool) -> dict[str, Any]:
    """Channel-layer message; the route fields are what the gateway's ordered delivery reads."""
    return events.build(
        message.conversation_id,
        "message.stream_chunk",
        chunk_data(message, first=first, last=last, delta=delta, stream_end=stream_end),
        seq=message.seq,
        message_id=message.id,
        chunk_index=first,
        last_chunk_index=last,
    )
