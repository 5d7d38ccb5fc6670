"""Wire shapes of docs/protocol.md section 2, shared by REST responses and WebSocket events."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Protocol

from .models import Conversation, Member, Message


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.isoformat().replace("+00:00", "Z")


class MemberCursors(Protocol):
    """What a message's status needs of a member (a `Member`, or the row of
    `selectors.member_cursors`)."""

    user_id: str
    joined_seq: int
    read_seq: int
    delivered_seq: int


class StatusView:
    """Status of messages "as seen by the sender", from the members' cursors loaded once per
    conversation: a bisect per message (docs/receipts.md, "Status")."""

    def __init__(self, members: Iterable[MemberCursors]):
        ordered = sorted(members, key=lambda m: m.joined_seq)
        self._joined = [m.joined_seq for m in ordered]
        self._joined_seq_of = {m.user_id: m.joined_seq for m in ordered}
        self._read = _two_lowest_prefixes([(m.read_seq, m.user_id) for m in ordered])
        self._delivered = _two_lowest_prefixes([(m.delivered_seq, m.user_id) for m in ordered])

    def status(self, message: Message) -> str:
        counted = bisect_left(self._joined, message.seq)
        sender_counted = self._joined_seq_of.get(message.sender_id, message.seq) < message.seq
        if counted - sender_counted <= 0:
            return "sent"
        if _lowest_but(self._read[counted - 1], message.sender_id) >= message.seq:
            return "read"
        if _lowest_but(self._delivered[counted - 1], message.sender_id) >= message.seq:
            return "delivered"
        return "sent"


_NONE = float("inf")


def _two_lowest_prefixes(cursors: list[tuple[int, str]]) -> list[tuple[float, str | None, float]]:
    """For each prefix: (lowest cursor, whose it is, lowest cursor of anyone else)."""
    out: list[tuple[float, str | None, float]] = []
    low, who, second = _NONE, None, _NONE
    for value, user_id in cursors:
        if value < low:
            low, who, second = value, user_id, low
        elif value < second:
            second = value
        out.append((low, who, second))
    return out


def _lowest_but(prefix: tuple[float, str | None, float], user_id: str) -> float:
    low, who, second = prefix
    return second if who == user_id else low


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
