"""Wire shapes of PROTOCOL.md section 2, shared by REST responses and WebSocket events."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from .models import Conversation, Member, Message


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.isoformat().replace("+00:00", "Z")


class StatusView:
    """Status of messages "as seen by the sender": delivered / read by every other member.

    Built from the members' cursors, which the caller loads once per conversation, so a
    page of messages costs no query per message. Members who joined after a message do
    not count for it.
    """

    def __init__(self, members: Iterable[Member]):
        self._members = list(members)

    def status(self, message: Message) -> str:
        others = [
            m for m in self._members if m.user_id != message.sender_id and m.joined_seq < message.seq
        ]
        if not others:
            return "sent"
        if min(m.read_seq for m in others) >= message.seq:
            return "read"
        if min(m.delivered_seq for m in others) >= message.seq:
            return "delivered"
        return "sent"


def stream_dict(message: Message) -> dict[str, Any] | None:
    if not message.stream_state:
        return None
    return {"stream_id": message.client_msg_id, "state": message.stream_state, "chunk_count": message.stream_chunk_count}


def message_dict(message: Message, status: str = "sent") -> dict[str, Any]:
    return {
        "message_id": message.id,
        "conversation_id": message.conversation_id,
        "sender_id": message.sender_id,
        "type": message.type,
        "content": message.content,
        "seq": message.seq,
        "created_at": iso(message.created_at),
        "edited_at": iso(message.edited_at),
        "reply_to": message.reply_to,
        "client_msg_id": message.client_msg_id,
        "metadata": message.metadata,
        "status": status,
        "stream": stream_dict(message),
    }


def member_dict(member: Member) -> dict[str, Any]:
    return {
        "user_id": member.user_id,
        "role": member.role,
        "joined_at": iso(member.joined_at),
        "last_read_seq": member.read_seq,
    }


def conversation_dict(
    conversation: Conversation,
    *,
    members: list[Member],
    last_message: Message | None,
    unread_count: int,
) -> dict[str, Any]:
    statuses = StatusView(members)
    return {
        "conversation_id": conversation.id,
        "type": conversation.type,
        "name": conversation.name,
        "metadata": conversation.metadata,
        "created_at": iso(conversation.created_at),
        "updated_at": iso(conversation.updated_at),
        "last_seq": conversation.last_seq,
        "members": [member_dict(m) for m in members],
        "last_message": message_dict(last_message, statuses.status(last_message)) if last_message else None,
        "unread_count": unread_count,
    }
