"""Reads of the streaming app. The gap fill runs for a subscription the gateway has already
authorized, so it reads by message id alone."""

from __future__ import annotations

from messaging.models import Message

from .models import StreamChunk


def stream_chunks_from(*, message_id: str, from_index: int) -> list[StreamChunk]:
    """Chunks from_index.. in order, each with its message (one query, one snapshot)."""
    return list(
        StreamChunk.objects.filter(message_id=message_id, index__gte=from_index)
        .select_related("message")
        .only(
            "index",
            "text",
            "message__id",
            "message__conversation_id",
            "message__seq",
            "message__client_msg_id",
            "message__stream_state",
            "message__stream_chunk_count",
        )
        .order_by("index")
    )


def stream_exists(*, tenant: str, sender: str, conversation_id: str, client_msg_id: str) -> bool:
    return Message.objects.filter(
        tenant=tenant, conversation_id=conversation_id, sender_id=sender, client_msg_id=client_msg_id
    ).exists()
