"""Reads: per-message receipts, from the members' cursor histories."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import OuterRef, Subquery

from aiim_project.core.errors import NotFound
from messaging.models import Member, Message
from messaging.selectors import conversation_for_member

from .models import CursorKind, CursorMove


@dataclass(frozen=True)
class Receipt:
    user_id: str
    delivered_at: datetime | None
    read_at: datetime | None


@dataclass(frozen=True)
class MessageReceipts:
    conversation_id: str
    message_id: str
    receipts: list[Receipt]


def _first_move_at(kind: str, seq: int) -> Subquery:
    """When the member's cursor first covered `seq`: its first move to a seq >= it
    (one index seek on (member, kind, seq) per member)."""
    moves = CursorMove.objects.filter(member=OuterRef("pk"), kind=kind, seq__gte=seq).order_by("seq")
    return Subquery(moves.values("at")[:1])


def message_receipts(*, tenant: str, user_id: str, conversation_id: str, message_id: str) -> MessageReceipts:
    """Receipts of one message for every member but its sender, in one query; members who
    joined after it are omitted (docs/receipts.md). 404 / 403 as for the history."""
    conversation_for_member(tenant=tenant, user_id=user_id, conversation_id=conversation_id)
    message = Message.objects.filter(conversation_id=conversation_id, id=message_id).values("seq", "sender_id").first()
    if message is None:
        raise NotFound("Message not found.")
    seq = message["seq"]
    rows = (
        Member.objects.filter(conversation_id=conversation_id, joined_seq__lt=seq)
        .exclude(user_id=message["sender_id"])
        .annotate(
            delivered_move_at=_first_move_at(CursorKind.DELIVERED, seq),
            read_move_at=_first_move_at(CursorKind.READ, seq),
        )
        .order_by("joined_at", "id")
        .values_list("user_id", "delivered_move_at", "read_move_at")
    )
    return MessageReceipts(
        conversation_id=conversation_id,
        message_id=message_id,
        receipts=[Receipt(user_id=u, delivered_at=d, read_at=r) for u, d, r in rows],
    )


def unread_after(*, conversation_id: str, user_id: str, read_seq: int) -> int:
    """Messages after `read_seq` not sent by `user_id`: the unread count the conversation
    list shows, for one conversation (same index-only scan)."""
    return Message.objects.filter(conversation_id=conversation_id, seq__gt=read_seq).exclude(sender_id=user_id).count()
