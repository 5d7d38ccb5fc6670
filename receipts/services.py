"""Writes: delivered and read cursors. A cursor is a position (every seq <= N sent by someone
else); forward only, read implies delivered, clamped: docs/receipts.md, "Cursors".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from aiim_project.core import events
from aiim_project.core.checks import MAX_OBJECT_ID_LENGTH, check_access, check_id, is_id
from aiim_project.core.errors import Forbidden, Invalid, NotFound
from messaging.models import Conversation, Member, Message

from . import storage
from .models import CursorKind, CursorMove
from .selectors import unread_after

MAX_SEQ = 2**62


@dataclass(frozen=True)
class CursorUpdate:
    conversation_id: str
    # The seq the client asked for, after clamping to the conversation's last seq.
    target_seq: int
    advanced: bool


def check_claimed_user(user_id: str, claimed: Any) -> None:
    """A `user_id` in a request may only name the caller: nobody marks for someone else."""
    if claimed is not None and claimed != user_id:
        raise Forbidden("You can only mark receipts for yourself.")


def _check_position(seq: Any, message_id: Any, seq_field: str, id_field: str) -> None:
    if (seq is None) == (message_id is None):
        raise Invalid(
            f"Give exactly one of '{id_field}' or '{seq_field}'.",
            errors={seq_field: [f"Give exactly one of {id_field} or {seq_field}."]},
        )
    if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= MAX_SEQ):
        raise Invalid(f"'{seq_field}' must be a non-negative integer.", errors={seq_field: ["Invalid seq."]})
    if message_id is not None and not is_id(message_id, MAX_OBJECT_ID_LENGTH):
        raise Invalid(f"'{id_field}' must be a message id.", errors={id_field: ["Invalid message id."]})


def _member(*, tenant: str, user_id: str, conversation_id: str) -> Member:
    member = (
        Member.objects.select_related("conversation")
        .filter(tenant=tenant, conversation_id=conversation_id, user_id=user_id)
        .first()
    )
    if member is not None:
        return member
    check_access(found=Conversation.objects.filter(tenant=tenant, id=conversation_id).exists(), is_member=False)


def _advance(member: Member, kind: str, seq: int, now: datetime) -> bool:
    """One conditional UPDATE: atomic against a concurrent advance from another device (the
    loser re-checks the condition on the committed row and becomes a no-op, never a step
    back), and a record of the move when it happened."""
    if kind == CursorKind.READ:
        moved = Member.objects.filter(pk=member.pk, read_seq__lt=seq).update(read_seq=seq, read_at=now)
    else:
        moved = Member.objects.filter(pk=member.pk, delivered_seq__lt=seq).update(delivered_seq=seq, delivered_at=now)
    if moved:
        CursorMove.objects.create(tenant=member.tenant, member=member, kind=kind, seq=seq, at=now)
    return bool(moved)


def _publish(tenant: str, conversation_id: str, user_id: str, kind: str, seq: int, message_id: str | None, unread_count: int | None) -> None:
    if kind == CursorKind.READ:
        data: dict[str, Any] = {"user_id": user_id, "last_read_seq": seq}
        if message_id is not None:
            data["last_read_message_id"] = message_id
        # A device without the messages (a conversation list) can show the new count as is.
        # Not private: every member can count it from last_read_seq and the history.
        data["unread_count"] = unread_count
        # The reader's own devices get it through their user group too, subscribed to the
        # conversation or not, so each of them can update its unread count at once.
        groups = [events.conversation_group(tenant, conversation_id), events.user_group(tenant, user_id)]
    else:
        # `seq` is the original AIIM's name for the same cursor: its clients read it.
        data = {"user_id": user_id, "up_to_seq": seq, "seq": seq}
        if message_id is not None:
            data["message_id"] = message_id
        groups = [events.conversation_group(tenant, conversation_id)]
    # The `user_id` route field lets the gateway tell the reader's own connections without
    # decoding the frame.
    events.publish_on_commit(groups, events.build(conversation_id, f"receipt.{kind}", data, user_id=user_id))


def cursor_advance(
    *,
    tenant: str,
    user_id: str,
    conversation_id: str,
    kind: str,
    seq: int | None = None,
    message_id: str | None = None,
    seq_field: str = "up_to_seq",
    id_field: str = "message_id",
) -> CursorUpdate:
    """Move the caller's delivered or read cursor up to `seq` or to `message_id`'s seq;
    `receipt.<kind>` after commit only if it moved. `seq_field`/`id_field`: the wire names.
    On PostgreSQL one statement, atomic by itself (`storage.advance`); elsewhere one
    transaction of the ORM's queries."""
    _check_position(seq, message_id, seq_field, id_field)
    check_id(conversation_id, "conversation_id", max_length=MAX_OBJECT_ID_LENGTH, detail="'conversation_id' must be a conversation id.", error="Invalid id.")
    if storage.fast():
        done = storage.advance(
            tenant=tenant, user_id=user_id, conversation_id=conversation_id, seq=seq, message_id=message_id,
            read=kind == CursorKind.READ, now=timezone.now(),
        )
        if done is not None:  # else not a member here: the ORM's version tells which error
            if done.target_seq is None:
                raise NotFound("Message not found.")
            advanced = done.read_moved if kind == CursorKind.READ else done.delivered_moved
            if advanced:
                _publish(tenant, conversation_id, user_id, kind, done.target_seq, message_id, done.unread_count)
            return CursorUpdate(conversation_id=conversation_id, target_seq=done.target_seq, advanced=advanced)
    return _advance_with_orm(tenant=tenant, user_id=user_id, conversation_id=conversation_id, kind=kind, seq=seq, message_id=message_id)


@transaction.atomic
def _advance_with_orm(*, tenant: str, user_id: str, conversation_id: str, kind: str, seq: int | None, message_id: str | None) -> CursorUpdate:
    member = _member(tenant=tenant, user_id=user_id, conversation_id=conversation_id)
    if message_id is not None:
        seq = Message.objects.filter(conversation_id=member.conversation_id, id=message_id).values_list("seq", flat=True).first()
        if seq is None:
            raise NotFound("Message not found.")
    # A stored message's seq is never above last_seq, so only a raw seq is ever clamped.
    target = min(seq, member.conversation.last_seq)

    now = timezone.now()
    if kind == CursorKind.READ:
        _advance(member, CursorKind.DELIVERED, target, now)
    advanced = _advance(member, kind, target, now)
    if advanced:
        unread = unread_after(conversation_id=conversation_id, user_id=user_id, read_seq=target) if kind == CursorKind.READ else None
        _publish(tenant, conversation_id, user_id, kind, target, message_id, unread)
    return CursorUpdate(conversation_id=member.conversation_id, target_seq=target, advanced=advanced)
