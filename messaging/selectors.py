"""Reads. Every selector is scoped by tenant; another tenant's id is simply not found."""

from __future__ import annotations

import base64
import binascii
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

from django.db import connection
from django.db.models import Count, Exists, Model, OuterRef, Prefetch, Q, QuerySet, Subquery

from aiim_project.compat.django import instances_from_rows
from aiim_project.core.checks import check_access, not_a_member
from aiim_project.core.errors import AiimError, Invalid, NotFound

from .models import Conversation, Member, Message
from .rendering import MemberCursors

MAX_PAGE = 200


def conversation_for_member(*, tenant: str, user_id: str, conversation_id: str, hide_membership: bool = False) -> Conversation:
    """The conversation if `user_id` is a member. 404 if missing or another tenant's;
    403 if it exists in the tenant but the user is not a member."""
    row = (
        Conversation.objects.filter(tenant=tenant, id=conversation_id)
        .annotate(is_member=Exists(Member.objects.filter(conversation=OuterRef("pk"), user_id=user_id)))
        .first()
    )
    check_access(found=row is not None, is_member=row is not None and row.is_member, hide_membership=hide_membership)
    return row


def is_member(*, tenant: str, user_id: str, conversation_id: str) -> bool:
    return Member.objects.filter(tenant=tenant, conversation_id=conversation_id, user_id=user_id).exists()


# What `StatusView` reads of each member, as rows: as model instances a group's members cost
# ~7x more (bench/status_members.py), on every stream end and replayed batch.
_CURSOR_FIELDS = ("user_id", "joined_seq", "read_seq", "delivered_seq")


def member_cursors(conversation_id: str) -> list[MemberCursors]:
    return list(Member.objects.filter(conversation_id=conversation_id).values_list(*_CURSOR_FIELDS, named=True))


def cursors_by_conversation(conversation_ids: Iterable[str]) -> dict[str, list[MemberCursors]]:
    """`member_cursors` for several conversations in one query."""
    out: dict[str, list[MemberCursors]] = defaultdict(list)
    rows = Member.objects.filter(conversation_id__in=set(conversation_ids)).values_list("conversation_id", *_CURSOR_FIELDS, named=True)
    for row in rows:
        out[row.conversation_id].append(row)
    return out


def _with_list_data(qs: QuerySet[Conversation], user_id: str) -> QuerySet[Conversation]:
    """Members, last message and the caller's unread count in a constant number of queries."""
    my_read_seq = Member.objects.filter(conversation=OuterRef(OuterRef("pk")), user_id=user_id).values("read_seq")[:1]
    # COUNT(*) over (conversation, seq, sender_id) only: an index-only range scan of the
    # messages after the cursor (index `message_unread`), never the message rows.
    unread = (
        Message.objects.filter(conversation=OuterRef("pk"))
        .exclude(sender_id=user_id)
        .filter(seq__gt=Subquery(my_read_seq))
        .order_by()
        .values("conversation")
        .annotate(n=Count("*"))
        .values("n")
    )
    last_id = Message.objects.filter(conversation=OuterRef("pk")).order_by("-seq").values("id")[:1]
    return qs.annotate(unread_n=Subquery(unread), last_message_id=Subquery(last_id)).prefetch_related(
        Prefetch("members", queryset=Member.objects.order_by("joined_at", "id"))
    )


@dataclass
class ConversationView:
    conversation: Conversation
    members: list[Member]
    last_message: Message | None
    unread_count: int


def _views(conversations: list[Conversation]) -> list[ConversationView]:
    last_ids = [c.last_message_id for c in conversations if c.last_message_id]
    last = {m.id: m for m in Message.objects.filter(id__in=last_ids)} if last_ids else {}
    return [
        ConversationView(
            conversation=c,
            members=list(c.members.all()),
            last_message=last.get(c.last_message_id),
            unread_count=c.unread_n or 0,
        )
        for c in conversations
    ]


def conversation_view(*, tenant: str, user_id: str, conversation_id: str) -> ConversationView:
    conversation_for_member(tenant=tenant, user_id=user_id, conversation_id=conversation_id)
    qs = _with_list_data(Conversation.objects.filter(tenant=tenant, id=conversation_id), user_id)
    return _views(list(qs))[0]


def _encode_cursor(c: Conversation) -> str:
    raw = f"{c.updated_at.isoformat()}|{c.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, conv_id = raw.split("|", 1)
        when = datetime.fromisoformat(stamp)
        if when.tzinfo is None or "\x00" in conv_id:
            raise ValueError(cursor)
        # In UTC, as stored; a forged offset at the edge of the calendar overflows here.
        return when.astimezone(UTC), conv_id
    except (binascii.Error, UnicodeDecodeError, ValueError, OverflowError):
        raise Invalid("Invalid cursor.", errors={"cursor": ["Invalid cursor."]}) from None


def conversation_list(*, tenant: str, user_id: str, limit: int = 50, cursor: str | None = None) -> tuple[list[ConversationView], str | None]:
    """Most recent activity first; keyset pagination on (updated_at, id)."""
    qs = Conversation.objects.filter(
        tenant=tenant, id__in=Member.objects.filter(tenant=tenant, user_id=user_id).values("conversation_id")
    ).order_by("-updated_at", "-id")
    if cursor:
        stamp, conv_id = _decode_cursor(cursor)
        qs = qs.filter(Q(updated_at__lt=stamp) | Q(updated_at=stamp, id__lt=conv_id))
    rows = list(_with_list_data(qs, user_id)[: limit + 1])
    has_more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = _encode_cursor(rows[-1]) if has_more and rows else None
    return _views(rows), next_cursor


@dataclass
class MessagePage:
    messages: list[Message]
    has_more: bool
    members: list[Member]


def messages_page(
    *,
    tenant: str,
    user_id: str,
    conversation_id: str,
    limit: int = 50,
    before_id: str | None = None,
    before_seq: int | None = None,
    after_seq: int | None = None,
) -> MessagePage:
    """History, always ascending by seq, in two fixed SQL statements (the members, which
    authorize the caller, then the page). Why `after_seq` never skips: docs/architecture.md."""
    members = _members_if_member(tenant=tenant, user_id=user_id, conversation_id=conversation_id)
    if before_id is not None:
        anchor = Message.objects.filter(conversation_id=conversation_id, id=before_id).values_list("seq", flat=True).first()
        if anchor is None:
            raise NotFound("Message not found.")
        before_seq = anchor if before_seq is None else min(before_seq, anchor)
    forward = after_seq is not None
    bounds = [b for b in (after_seq, before_seq) if b is not None]
    rows = _fetch(Message, _page_sql(forward, after_seq is not None, before_seq is not None), [conversation_id, *bounds, limit + 1])
    has_more = len(rows) > limit
    rows = rows[:limit] if forward else rows[:limit][::-1]
    return MessagePage(messages=rows, has_more=has_more, members=members)


def _columns(model: type[Model], alias: str) -> str:
    qn = connection.ops.quote_name
    return ", ".join(f"{alias}.{qn(f.column)}" for f in model._meta.concrete_fields)


@lru_cache(maxsize=8)
def _page_sql(forward: bool, after: bool, before: bool) -> str:
    qn = connection.ops.quote_name
    seq = f"x.{qn(Message._meta.get_field('seq').column)}"
    where = [f"x.{qn(Message._meta.get_field('conversation').column)} = %s"]
    if after:
        where.append(f"{seq} > %s")
    if before:
        where.append(f"{seq} < %s")
    return (
        f"SELECT {_columns(Message, 'x')} FROM {qn(Message._meta.db_table)} x"
        f" WHERE {' AND '.join(where)} ORDER BY {seq} {'ASC' if forward else 'DESC'} LIMIT %s"
    )


@lru_cache(maxsize=1)
def _members_sql() -> str:
    qn = connection.ops.quote_name
    conv = Conversation._meta
    return (
        f"SELECT {_columns(Member, 'm')} FROM {qn(Member._meta.db_table)} m"
        f" JOIN {qn(conv.db_table)} c ON c.{qn(conv.pk.column)} = m.{qn(Member._meta.get_field('conversation').column)}"
        f" WHERE c.{qn(conv.get_field('tenant').column)} = %s AND c.{qn(conv.pk.column)} = %s"
        f" ORDER BY m.{qn(Member._meta.get_field('joined_at').column)}, m.{qn(Member._meta.pk.column)}"
    )


def _members_if_member(*, tenant: str, user_id: str, conversation_id: str) -> list[Member]:
    """The members of a conversation of `tenant` that `user_id` is a member of, in one
    statement; otherwise exactly `conversation_for_member`'s 404 / 403."""
    for _ in range(2):
        members = _fetch(Member, _members_sql(), [tenant, conversation_id])
        if any(m.user_id == user_id for m in members):
            return members
        # Not a member, or no such conversation in this tenant: the usual errors. If that
        # finds the caller a member after all (added in between), read the members again.
        conversation_for_member(tenant=tenant, user_id=user_id, conversation_id=conversation_id)
    raise not_a_member()


@lru_cache(maxsize=4)
def _converters(model: type[Model]) -> list[tuple[int, list, object]]:
    """The ORM's from-database converters for each column of `model` that has any
    (JSONField decoding; on SQLite, dates and times), as `SQLCompiler.get_converters`."""
    out = []
    for i, field in enumerate(model._meta.concrete_fields):
        col = field.get_col(model._meta.db_table)
        found = connection.ops.get_db_converters(col) + col.get_db_converters(connection)
        if found:
            out.append((i, found, col))
    return out


def _fetch(model: type[Model], sql: str, params: list) -> list:
    """Instances of `model` from a fixed SQL statement selecting its concrete fields in
    order: the same objects, values and types the ORM's queryset would give."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        raw = cursor.fetchall()
    converters = _converters(model)
    if converters:
        rows = []
        for row in raw:
            row = list(row)
            for i, funcs, col in converters:
                value = row[i]
                for func in funcs:
                    value = func(value, col, connection)
                row[i] = value
            rows.append(row)
        raw = rows
    return instances_from_rows(model, raw, connection.alias)


def messages_after(*, conversation_id: str, after_seq: int, limit: int, up_to_seq: int | None = None) -> list[Message]:
    """Replay and gap fill for a subscription the caller has already authorized."""
    qs = Message.objects.filter(conversation_id=conversation_id, seq__gt=after_seq)
    if up_to_seq is not None:
        qs = qs.filter(seq__lte=up_to_seq)
    return list(qs.order_by("seq")[:limit])


def subscription_snapshot(
    *, tenant: str, user_id: str, conversation_id: str, since_seq: int | None, limit: int
) -> tuple[int, list[Message] | None]:
    """For a subscription whose group the gateway has ALREADY joined: the last committed seq L
    and, with `since_seq`, the messages in (since_seq, L] (None when more than `limit`). Why
    nothing falls between replay and live: docs/gateway.md, "Ordered delivery: why it holds"."""
    conversation = conversation_for_member(tenant=tenant, user_id=user_id, conversation_id=conversation_id)
    last_seq = conversation.last_seq
    if since_seq is None or since_seq >= last_seq:
        return last_seq, []
    rows = messages_after(conversation_id=conversation_id, after_seq=since_seq, limit=limit + 1, up_to_seq=last_seq)
    return last_seq, (rows if len(rows) <= limit else None)


@dataclass(frozen=True, slots=True)
class SnapshotRequest:
    tenant: str
    user_id: str
    conversation_id: str
    since_seq: int | None


def subscription_snapshots(requests: Sequence[SnapshotRequest], limit: int) -> list[tuple[int, list[Message] | None] | AiimError]:
    """`subscription_snapshot` for many subscribers at once (each one's group ALREADY joined), in
    three queries per tenant plus one for the replays: per request, (L, rows) or the error its
    own snapshot would raise (another tenant's id is missing). Rows may be shared by requests."""
    by_tenant: dict[str, list[SnapshotRequest]] = defaultdict(list)
    for r in requests:
        by_tenant[r.tenant].append(r)
    last: dict[tuple[str, str], int] = {}
    members: set[tuple[str, str, str]] = set()
    for tenant, rs in by_tenant.items():
        found = Conversation.objects.filter(tenant=tenant, id__in={r.conversation_id for r in rs}).values_list("id", "last_seq")
        last.update(((tenant, cid), seq) for cid, seq in found)
        convs = {r.conversation_id for r in rs if (tenant, r.conversation_id) in last}
        if convs:
            pairs = Member.objects.filter(conversation_id__in=convs, user_id__in={r.user_id for r in rs}).values_list("conversation_id", "user_id")
            members.update((tenant, cid, uid) for cid, uid in pairs)
    # One range per conversation: from the lowest since_seq of its requests to its L.
    lowest: dict[tuple[str, str], int] = {}
    out: list[tuple[int, list[Message] | None] | AiimError] = []
    for r in requests:
        key = (r.tenant, r.conversation_id)
        try:
            check_access(found=key in last, is_member=(r.tenant, r.conversation_id, r.user_id) in members)
        except AiimError as exc:
            out.append(exc)
            continue
        out.append((last[key], []))
        if r.since_seq is not None and r.since_seq < last[key]:
            lowest[key] = min(r.since_seq, lowest.get(key, r.since_seq))
    rows = _ranges_below(lowest, last, limit)
    for i, r in enumerate(requests):
        res = out[i]
        if isinstance(res, AiimError) or r.since_seq is None or r.since_seq >= res[0]:
            continue
        mine = [m for m in rows[(r.tenant, r.conversation_id)] if m.seq > r.since_seq]
        out[i] = (res[0], mine if len(mine) <= limit else None)
    return out


def _ranges_below(lowest: dict[tuple[str, str], int], last: dict[tuple[str, str], int], limit: int) -> dict[tuple[str, str], list[Message]]:
    """Per conversation the newest limit+1 messages in (lowest, L], ascending: every request's
    rows when it has at most `limit`, and limit+1 of them when it has more. Ranges that cannot
    hold more than limit+1 rows (seqs are unique) share one query."""
    rows: dict[tuple[str, str], list[Message]] = defaultdict(list)
    small = Q()
    for (tenant, cid), lo in lowest.items():
        up = last[(tenant, cid)]
        if up - lo <= limit + 1:
            small |= Q(conversation_id=cid, seq__gt=lo, seq__lte=up)
        else:
            newest = Message.objects.filter(conversation_id=cid, seq__gt=lo, seq__lte=up).order_by("-seq")[: limit + 1]
            rows[(tenant, cid)] = list(reversed(newest))
    if small:
        tenant_of = {cid: tenant for tenant, cid in lowest}
        for m in Message.objects.filter(small).order_by("conversation_id", "seq"):
            rows[(tenant_of[m.conversation_id], m.conversation_id)].append(m)
    return rows


def members_among(tenant: str, pairs: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
    """The (conversation_id, user_id) pairs that are memberships in `tenant`: `is_member` for
    several at once, one query."""
    pairs = set(pairs)
    if not pairs:
        return set()
    found = Member.objects.filter(
        tenant=tenant, conversation_id__in={c for c, _ in pairs}, user_id__in={u for _, u in pairs}
    ).values_list("conversation_id", "user_id")
    return pairs & set(found)


def message_for_member(*, tenant: str, user_id: str, conversation_id: str, message_id: str) -> Message:
    """The message if `user_id` is a member of its conversation: 404 for a missing or another
    tenant's conversation or message, 403 for a non-member (as `conversation_for_member`)."""
    conversation_for_member(tenant=tenant, user_id=user_id, conversation_id=conversation_id)
    message = Message.objects.filter(tenant=tenant, conversation_id=conversation_id, id=message_id).first()
    if message is None:
        raise NotFound("Message not found.")
    return message
