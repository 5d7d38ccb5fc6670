"""Writes. Each service: check (validate, authorize, tenant), do (one transaction),
notify (events after commit)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Exists, Max, OuterRef
from django.utils import timezone

from aiim_project.core import events
from aiim_project.core.checks import MAX_OBJECT_ID_LENGTH, check_access, check_id, check_user_id, is_id
from aiim_project.core.errors import AiimError, Conflict, Forbidden, Invalid, NotFound, TooLarge
from aiim_project.core.metrics import SEQ_ALLOC_SECONDS

from . import hooks
from .models import Conversation, ConversationType, Member, Message, MessageType, Role
from .rendering import member_dict, message_dict, stream_dict
from .seq import get_allocator

logger = logging.getLogger("aiim.messaging")

MAX_MEMBERS_PER_CALL = 1000


def _encode(value: Any, field: str) -> str:
    """The JSON text a value is stored and fanned out as. Refuses (400, not a database error)
    integers beyond 64 bits, nesting deeper than 255 (orjson) and NUL (PostgreSQL rejects it)."""
    try:
        text = events.dumps(value)
    except TypeError:
        raise Invalid(
            f"'{field}' is not storable JSON (integers must fit in 64 bits; nesting at most 255 deep).",
            errors={field: ["Not storable JSON."]},
        ) from None
    if "\\u0000" in text:
        raise Invalid(f"'{field}' must not contain NUL characters.", errors={field: ["NUL character."]})
    return text


def encoded_size(value: Any, field: str = "content") -> int:
    return len(_encode(value, field).encode())


def check_content_size(content: Any, metadata: Any = None) -> None:
    size = encoded_size(content, "content") + (encoded_size(metadata, "metadata") if metadata else 0)
    if size > settings.MAX_MESSAGE_BYTES:
        raise TooLarge(f"Content is {size} bytes; the limit is {settings.MAX_MESSAGE_BYTES}.")


def _direct_key(a: str, b: str) -> str:
    lo, hi = sorted((a, b))
    return hashlib.sha256(f"{len(lo)}:{lo}|{hi}".encode()).hexdigest()


def lock_for_member(*, tenant: str, conversation_id: str, user_id: str) -> Conversation:
    """Lock the conversation row (serializing writers of this conversation) and authorize,
    in one round trip: the membership test rides on the locking SELECT."""
    conversation = (
        Conversation.objects.select_for_update(of=("self",))
        .filter(tenant=tenant, id=conversation_id)
        .annotate(is_member=Exists(Member.objects.filter(conversation_id=OuterRef("pk"), user_id=user_id)))
        .first()
    )
    check_access(found=conversation is not None, is_member=conversation is not None and conversation.is_member)
    return conversation


def _notify_members(tenant: str, conversation: Conversation, event: str, members: list[Member], actor: str) -> None:
    """One event per member, handed over together after commit (one publish batch)."""
    batch = [
        (
            [events.conversation_group(tenant, conversation.id), events.user_group(tenant, member.user_id)],
            events.build(
                conversation.id,
                event,
                {"user_id": member.user_id, "member": member_dict(member), "by": actor},
                user_id=member.user_id,
            ),
        )
        for member in members
    ]
    if batch:
        events.publish_all_on_commit(batch)


@dataclass(frozen=True)
class MemberSpec:
    user_id: str
    role: str = Role.MEMBER


@transaction.atomic
def conversation_create(
    *,
    tenant: str,
    creator: str,
    type: str = ConversationType.DIRECT,
    name: str = "",
    member_ids: list[str] | None = None,
    members: list[MemberSpec] | None = None,
    metadata: dict | None = None,
) -> tuple[Conversation, bool]:
    """Create a conversation; the creator is always a member, as owner. A direct conversation
    has exactly two distinct members and is unique per pair: a repeat returns it, created=False."""
    if type not in ConversationType.values:
        raise Invalid("type must be 'direct' or 'group'.", errors={"type": ["Invalid choice."]})
    roles: dict[str, str] = {creator: Role.OWNER}  # first, so the owner is listed first
    for user_id in member_ids or []:
        roles.setdefault(check_user_id(user_id, "member_ids"), Role.MEMBER)
    for spec in members or []:
        if spec.role not in (Role.MEMBER, Role.ASSISTANT, Role.OWNER):
            raise Invalid("role must be owner, member or assistant.", errors={"members": ["Invalid role."]})
        roles[check_user_id(spec.user_id, "members")] = spec.role
    roles[creator] = Role.OWNER
    if len(roles) > MAX_MEMBERS_PER_CALL:
        raise Invalid(f"At most {MAX_MEMBERS_PER_CALL} members.", errors={"member_ids": ["Too many members."]})
    if encoded_size(metadata or {}, "metadata") > settings.MAX_MESSAGE_BYTES:
        raise TooLarge(f"metadata is over {settings.MAX_MESSAGE_BYTES} bytes.")

    direct_key = None
    if type == ConversationType.DIRECT:
        if len(roles) != 2:
            raise Invalid(
                "A direct conversation has exactly two distinct members.",
                errors={"member_ids": ["Give exactly one other user."]},
            )
        a, b = sorted(roles)
        direct_key = _direct_key(a, b)
        existing = Conversation.objects.select_for_update().filter(tenant=tenant, direct_key=direct_key).first()
        if existing is not None:
            _rejoin_direct(tenant, existing, roles, creator)
            return existing, False

    try:
        with transaction.atomic():
            conversation = Conversation.objects.create(
                tenant=tenant, type=type, name=name or "", metadata=metadata or {}, direct_key=direct_key
            )
    except IntegrityError:
        # Lost the race to create the same direct pair: the winner's row is the answer.
        existing = Conversation.objects.filter(tenant=tenant, direct_key=direct_key).first()
        if existing is None:
            raise
        return existing, False
    Member.objects.bulk_create(
        [Member(tenant=tenant, conversation=conversation, user_id=u, role=r) for u, r in roles.items()]
    )
    created_members = list(Member.objects.filter(conversation=conversation))
    _notify_members(tenant, conversation, "member.joined", [m for m in created_members if m.user_id != creator], creator)
    return conversation, True


def _rejoin_direct(tenant: str, conversation: Conversation, roles: dict[str, str], creator: str) -> None:
    """A member who left a direct conversation gets back in by "creating" it again;
    otherwise the pair could never talk again (the pair is unique)."""
    present = set(Member.objects.filter(conversation=conversation).values_list("user_id", flat=True))
    missing = [u for u in roles if u not in present]
    if not missing:
        return
    seq = conversation.last_seq
    Member.objects.bulk_create(
        [
            Member(tenant=tenant, conversation=conversation, user_id=u, role=roles[u], joined_seq=seq, delivered_seq=seq, read_seq=seq)
            for u in missing
        ]
    )
    rejoined = list(Member.objects.filter(conversation=conversation, user_id__in=missing))
    _notify_members(tenant, conversation, "member.joined", rejoined, creator)


@transaction.atomic
def member_add(*, tenant: str, actor: str, conversation_id: str, user_ids: list[str], role: str = Role.MEMBER) -> Conversation:
    conversation = lock_for_member(tenant=tenant, conversation_id=conversation_id, user_id=actor)
    if conversation.type == ConversationType.DIRECT:
        raise Forbidden("Members cannot be added to a direct conversation.")
    if not Member.objects.filter(conversation=conversation, user_id=actor, role=Role.OWNER).exists():
        raise Forbidden("Only an owner can add members.")
    if role not in (Role.MEMBER, Role.ASSISTANT, Role.OWNER):
        raise Invalid("role must be owner, member or assistant.", errors={"role": ["Invalid choice."]})
    if not user_ids:
        raise Invalid("user_ids must not be empty.", errors={"user_ids": ["This list may not be empty."]})
    if len(user_ids) > MAX_MEMBERS_PER_CALL:
        raise Invalid(f"At most {MAX_MEMBERS_PER_CALL} users per call.", errors={"user_ids": ["Too many."]})
    wanted = list(dict.fromkeys(check_user_id(u, "user_ids") for u in user_ids))
    present = set(Member.objects.filter(conversation=conversation, user_id__in=wanted).values_list("user_id", flat=True))
    new = [
        Member(
            tenant=tenant,
            conversation=conversation,
            user_id=u,
            role=role,
            joined_seq=conversation.last_seq,
            delivered_seq=conversation.last_seq,
            read_seq=conversation.last_seq,
        )
        for u in wanted
        if u not in present
    ]
    if new:
        Member.objects.bulk_create(new)
        added = list(Member.objects.filter(conversation=conversation, user_id__in=[m.user_id for m in new]))
        _notify_members(tenant, conversation, "member.joined", added, actor)
    return conversation


@transaction.atomic
def member_remove(*, tenant: str, actor: str, conversation_id: str, user_id: str) -> None:
    """An owner removes anyone; anyone removes themself. Live subscriptions of the removed
    member end at once: the gateway drops them on the `member.left` event. When the last
    owner goes, the longest-standing remaining member becomes owner (see _keep_an_owner)."""
    conversation = lock_for_member(tenant=tenant, conversation_id=conversation_id, user_id=actor)
    if user_id != actor and not Member.objects.filter(conversation=conversation, user_id=actor, role=Role.OWNER).exists():
        raise Forbidden("Only an owner can remove other members.")
    member = Member.objects.filter(conversation=conversation, user_id=user_id).first()
    if member is None:
        raise NotFound("Member not found.")
    member.delete()
    if member.role == Role.OWNER:
        _keep_an_owner(conversation)
    _notify_members(tenant, conversation, "member.left", [member], actor)


def _keep_an_owner(conversation: Conversation) -> None:
    """A group without an owner could never add or remove members again, and refusing the
    last owner's leave would trap them in it. So the longest-standing remaining member
    becomes owner, a person before an assistant (an AI should not inherit control)."""
    remaining = Member.objects.filter(conversation=conversation)
    if remaining.filter(role=Role.OWNER).exists():
        return
    heir = (
        remaining.filter(role=Role.MEMBER).order_by("joined_seq", "joined_at", "id").first()
        or remaining.order_by("joined_seq", "joined_at", "id").first()
    )
    if heir is not None:
        remaining.filter(pk=heir.pk).update(role=Role.OWNER)


def check_message_input(*, type: str, content: Any, metadata: Any, client_msg_id: Any, reply_to: Any) -> None:
    if type not in MessageType.values:
        raise Invalid(f"type must be one of {', '.join(MessageType.values)}.", errors={"type": ["Invalid choice."]})
    if content is None or content == "":
        raise Invalid("content is required.", errors={"content": ["This field is required."]})
    if metadata is not None and not isinstance(metadata, dict):
        raise Invalid("metadata must be an object.", errors={"metadata": ["Expected an object."]})
    if client_msg_id is not None:
        check_id(client_msg_id, "client_msg_id")
    if reply_to is not None and (not isinstance(reply_to, str) or (reply_to and not is_id(reply_to, MAX_OBJECT_ID_LENGTH))):
        raise Invalid("reply_to must be a message id.", errors={"reply_to": ["Invalid."]})
    check_content_size(content, metadata)


# `updated_at` (indexed: it orders the conversation list) moves forward to the whole second of
# the latest message, so it changes at most once a second: the other updates of the row leave
# every indexed column as it was and stay heap-only (HOT) on PostgreSQL (docs/architecture.md,
# "Hot rows").
_UPDATE_LAST_SEQ = (
    f"UPDATE {Conversation._meta.db_table} SET last_seq = %s,"
    " updated_at = CASE WHEN updated_at < %s THEN %s ELSE updated_at END WHERE id = %s"
)


def activity_time(created_at: datetime) -> datetime:
    """A message's contribution to its conversation's `updated_at`: its second."""
    return created_at.replace(microsecond=0)


@lru_cache(maxsize=1)
def _insert_sql() -> tuple[str, list]:
    """INSERT ... ON CONFLICT DO NOTHING RETURNING id for one message, and its fields. Fixed SQL,
    no savepoint: it runs on every send (docs/architecture.md, "The send path")."""
    fields = Message._meta.concrete_fields
    qn = connection.ops.quote_name
    sql = "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT DO NOTHING RETURNING {}".format(
        qn(Message._meta.db_table), ", ".join(qn(f.column) for f in fields), ", ".join(["%s"] * len(fields)), qn("id")
    )
    return sql, fields


@lru_cache(maxsize=64)
def _insert_many_sql(rows: int) -> str:
    sql, fields = _insert_sql()
    head, _, tail = sql.partition(" VALUES ")
    one = tail[: tail.index(")") + 1]
    return f"{head} VALUES {', '.join([one] * rows)}{tail[len(one):]}"


@dataclass(frozen=True)
class DependentRow:
    """A row of another table that refers to a new message, stored with it: in the same
    statement on PostgreSQL (a stream's first chunk: one round trip fewer per stream start)."""

    table: str
    columns: tuple[str, ...]
    values: tuple

    def sql(self, *, alone: bool) -> str:
        select = ", ".join(["%s"] * len(self.columns))
        return f"INSERT INTO {self.table} ({', '.join(self.columns)}) SELECT {select}{'' if alone else ' FROM m'}"

    def params(self, message_id: str, *, alone: bool) -> list:
        return list(self.values)


@dataclass(frozen=True)
class DependentUpdate:
    """An existing row of another table that records a new message's id (and `values`),
    updated with it: in the same statement on PostgreSQL (an assistant's run records its
    reply)."""

    table: str
    key: tuple[str, Any]  # (column, value) naming the row
    message_id_column: str
    values: tuple[tuple[str, Any], ...] = ()

    def sql(self, *, alone: bool) -> str:
        sets = ", ".join([f"{self.message_id_column} = {'%s' if alone else 'm.id'}", *(f"{c} = %s" for c, _ in self.values)])
        return f"UPDATE {self.table} SET {sets}{'' if alone else ' FROM m'} WHERE {self.table}.{self.key[0]} = %s"

    def params(self, message_id: str, *, alone: bool) -> list:
        return [*([message_id] if alone else []), *(v for _, v in self.values), self.key[1]]


Dependent = DependentRow | DependentUpdate


@lru_cache(maxsize=64)
def _store_sql(rows: int, dependents: tuple[str, ...] = ()) -> str:
    """PostgreSQL: the INSERT and the `last_seq` UPDATE in one statement (one round trip
    fewer on every send). The UPDATE, and the `dependents`, run only if every row was
    inserted."""
    also = "".join(f" d{k} AS ({sql})," for k, sql in enumerate(dependents))
    return (
        f"WITH m AS ({_insert_many_sql(rows)}),{also}"
        f" u AS ({_UPDATE_LAST_SEQ} AND (SELECT count(*) FROM m) = %s RETURNING 1)"
        " SELECT (SELECT count(*) FROM m)"
    )


def _store_messages(conversation_id: str, messages: list[Message], dependents: Sequence[Dependent] = ()) -> bool:
    """Insert the messages (and the `dependents` of the one message) and move `last_seq`
    to the last one's seq; False, with nothing stored, if any of their seqs exists already
    (the counter is behind the database)."""
    _, fields = _insert_sql()
    params = [f.get_db_prep_save(f.pre_save(m, True), connection) for m in messages for f in fields]
    last = messages[-1]
    activity = connection.ops.adapt_datetimefield_value(activity_time(last.created_at))
    update = [last.seq, activity, activity, conversation_id]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            sql = _store_sql(len(messages), tuple(d.sql(alone=False) for d in dependents))
            extra = [p for d in dependents for p in d.params(last.id, alone=False)]
            cursor.execute(sql, [*params, *extra, *update, len(messages)])
            return cursor.fetchone()[0] == len(messages)
        cursor.execute(_insert_many_sql(len(messages)), params)
        if len(cursor.fetchall()) != len(messages):
            return False
        cursor.execute(_UPDATE_LAST_SEQ, update)
        for d in dependents:
            cursor.execute(d.sql(alone=True), d.params(last.id, alone=True))
        return True


def insert_with_seq(conversation: Conversation, *, dependents: Sequence[Dependent] = (), **fields: Any) -> Message:
    """Allocate the next seq and insert (with the `dependents` on it). Runs under the
    conversation's row lock."""
    allocator = get_allocator()
    floor = conversation.last_seq
    for _ in range(3):
        with SEQ_ALLOC_SECONDS.labels(backend=allocator.name).time():
            seq = allocator.allocate(conversation_id=conversation.id, floor=floor)
        message = Message(conversation_id=conversation.id, seq=seq, **fields)
        if _store_messages(conversation.id, [message], dependents):
            conversation.last_seq = seq
            return message
        # Last line of defence: the counter handed out a seq that exists. Raise it to the
        # database's maximum (only ever upward) and try again.
        floor = Message.objects.filter(conversation_id=conversation.id).aggregate(m=Max("seq"))["m"] or 0
        floor = max(floor, conversation.last_seq)
        allocator.raise_floor(conversation_id=conversation.id, floor=floor)
        logger.warning("seq collision in conversation %s; counter raised to %s", conversation.id, floor)
    raise Conflict("Could not allocate a sequence number; retry.")


@lru_cache(maxsize=2)
def _lock_for_send_sql(others_stream: bool) -> str:
    lock = " FOR UPDATE OF c" if connection.features.has_select_for_update_of else ""
    others = (
        f", EXISTS (SELECT 1 FROM {Message._meta.db_table} y WHERE y.conversation_id = c.id AND y.client_msg_id = %s"
        "   AND y.sender_id <> %s AND y.stream_state IS NOT NULL)"
        if others_stream
        else ""
    )
    return (
        "SELECT c.last_seq,"
        f" EXISTS (SELECT 1 FROM {Member._meta.db_table} m WHERE m.conversation_id = c.id AND m.user_id = %s),"
        f" (SELECT x.id FROM {Message._meta.db_table} x"
        f"   WHERE x.conversation_id = c.id AND x.sender_id = %s AND x.client_msg_id = %s){others}"
        f" FROM {Conversation._meta.db_table} c WHERE c.tenant = %s AND c.id = %s{lock}"
    )


def _lock(*, tenant: str, conversation_id: str, sender: str, client_msg_id: str | None, others_stream: bool) -> tuple:
    params = [sender, sender, client_msg_id, *([client_msg_id, sender] if others_stream else []), tenant, conversation_id]
    with connection.cursor() as cursor:
        cursor.execute(_lock_for_send_sql(others_stream), params)
        row = cursor.fetchone()
    check_access(found=row is not None, is_member=row is not None and row[1])
    return (Conversation(id=conversation_id, tenant=tenant, last_seq=row[0]), *row[2:])


def lock_for_send(*, tenant: str, conversation_id: str, sender: str, client_msg_id: str | None) -> tuple[Conversation, str | None]:
    """`lock_for_member` for a send, as fixed SQL (it runs on every message and every stream
    start, and compiling the ORM query cost more CPU than the round trip): (the conversation
    with the fields the send path uses, the id of the sender's earlier message with this
    client_msg_id)."""
    return _lock(tenant=tenant, conversation_id=conversation_id, sender=sender, client_msg_id=client_msg_id, others_stream=False)


def lock_for_stream_start(*, tenant: str, conversation_id: str, sender: str, client_msg_id: str) -> tuple[Conversation, str | None, bool]:
    """`lock_for_send` for a stream's start (or an abort that finds no stream), in the same one
    statement: also whether another sender has a stream named client_msg_id here (a stream id
    names one stream per conversation)."""
    return _lock(tenant=tenant, conversation_id=conversation_id, sender=sender, client_msg_id=client_msg_id, others_stream=True)


def message_created_event(tenant: str, message: Message) -> tuple[list[str], dict]:
    return (
        [events.conversation_group(tenant, message.conversation_id)],
        events.build(
            message.conversation_id,
            "message.created",
            {"message": message_dict(message)},
            seq=message.seq,
            # Route fields so each subscription tracks streams without decoding the frame.
            message_id=message.id,
            stream=stream_dict(message),
        ),
    )


def publish_message_created(tenant: str, message: Message) -> None:
    events.publish_on_commit(*message_created_event(tenant, message))


@dataclass(frozen=True)
class SendInput:
    """One message of a send run (the fields of a `send_msg` frame)."""

    content: Any
    type: Any = MessageType.TEXT
    client_msg_id: Any = None
    reply_to: Any = None
    metadata: Any = None


def _plan_send_run(items: Sequence[SendInput]) -> list[SendInput]:
    """The leading items that `message_send` would store as new messages without a read of
    its own: valid, no reply_to (its check is a query per message), no client_msg_id repeated
    within the run (the repeat answers with the original)."""
    plan: list[SendInput] = []
    ids: set[str] = set()
    for item in items:
        try:
            check_message_input(
                type=item.type, content=item.content, metadata=item.metadata, client_msg_id=item.client_msg_id, reply_to=item.reply_to
            )
        except AiimError:
            break
        if item.reply_to is not None or item.client_msg_id in ids:
            break
        if item.client_msg_id is not None:
            ids.add(item.client_msg_id)
        plan.append(item)
    return plan


def _client_ids_taken(*, conversation_id: str, sender: str, client_msg_ids: list[str]) -> set[str]:
    """Which of these client_msg_ids the sender has used in the conversation: fixed SQL,
    as on the rest of the send path (compiling the ORM query cost more than its round trip)."""
    sql = (
        f"SELECT client_msg_id FROM {Message._meta.db_table}"
        f" WHERE conversation_id = %s AND sender_id = %s AND client_msg_id IN ({', '.join(['%s'] * len(client_msg_ids))})"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [conversation_id, sender, *client_msg_ids])
        return {row[0] for row in cursor.fetchall()}


def message_send_run(*, tenant: str, sender: str, conversation_id: str, items: Sequence[SendInput]) -> list[Message]:
    """Group commit: store the leading messages of `items` in one transaction, as `message_send`
    would one by one; returns that prefix, the caller sends the rest one at a time. A failed
    run gives its seq range back (docs/architecture.md, "The send path", "Send runs")."""
    allocated: list[tuple[int, int]] = []
    try:
        return _send_run(tenant=tenant, sender=sender, conversation_id=conversation_id, items=items, allocated=allocated)
    except BaseException:
        for first, last in allocated:
            _give_back(tenant, conversation_id, first, last)
        raise


def _give_back(tenant: str, conversation_id: str, first: int, last: int) -> None:
    """Hand first..last back to the counter unless a stored seq is at or above `first`
    (the counter was behind the database: the next send raises it instead)."""
    try:
        top = Message.objects.filter(tenant=tenant, conversation_id=conversation_id).aggregate(m=Max("seq"))["m"] or 0
        if top < first:
            get_allocator().give_back(conversation_id=conversation_id, first=first, last=last)
    except Exception as exc:  # the failure that got here is what the caller reports
        logger.warning("seq range %s-%s of a failed run not given back: %s", first, last, type(exc).__name__)


@transaction.atomic
def _send_run(
    *, tenant: str, sender: str, conversation_id: str, items: Sequence[SendInput], allocated: list[tuple[int, int]]
) -> list[Message]:
    plan = _plan_send_run(items)
    if not plan:
        return []
    conversation, _ = lock_for_send(tenant=tenant, conversation_id=conversation_id, sender=sender, client_msg_id=None)
    ids = [item.client_msg_id for item in plan if item.client_msg_id is not None]
    if ids:
        taken = _client_ids_taken(conversation_id=conversation.id, sender=sender, client_msg_ids=ids)
        for k, item in enumerate(plan):
            if item.client_msg_id in taken:
                plan = plan[:k]
                break
        if not plan:
            return []
    allocator = get_allocator()
    with SEQ_ALLOC_SECONDS.labels(backend=allocator.name).time():
        first = allocator.allocate(conversation_id=conversation.id, floor=conversation.last_seq, count=len(plan))
    allocated.append((first, first + len(plan) - 1))
    messages = [
        Message(
            conversation_id=conversation.id,
            seq=first + k,
            tenant=tenant,
            sender_id=sender,
            type=item.type,
            content=item.content,
            client_msg_id=item.client_msg_id,
            reply_to=None,
            metadata=item.metadata or {},
        )
        for k, item in enumerate(plan)
    ]
    if not _store_messages(conversation.id, messages):
        # A seq of the range exists: the counter is behind. Nothing of the run is kept;
        # the one-at-a-time path raises the floor and retries each message.
        raise Conflict("Could not allocate sequence numbers for the run; retry.")
    events.publish_all_on_commit([message_created_event(tenant, m) for m in messages])
    hooks.messages_stored(tenant, messages)
    return messages


@transaction.atomic
def message_send(
    *,
    tenant: str,
    sender: str,
    conversation_id: str,
    content: Any,
    type: str = MessageType.TEXT,
    client_msg_id: str | None = None,
    reply_to: str | None = None,
    metadata: dict | None = None,
    stream_state: str | None = None,
) -> tuple[Message, bool]:
    """Store a message and publish `message.created` after commit; returns (message, created).
    A repeat of (conversation, sender, client_msg_id) returns the original, created=False; a
    rejected message consumes no seq (docs/architecture.md, "The send path")."""
    check_message_input(type=type, content=content, metadata=metadata, client_msg_id=client_msg_id, reply_to=reply_to)
    conversation, existing_id = lock_for_send(tenant=tenant, conversation_id=conversation_id, sender=sender, client_msg_id=client_msg_id)
    if existing_id is not None:
        return Message.objects.get(pk=existing_id), False
    if reply_to is not None and not Message.objects.filter(conversation_id=conversation.id, id=reply_to).exists():
        raise Invalid("reply_to is not a message of this conversation.", errors={"reply_to": ["Not found."]})
    message = insert_with_seq(
        conversation,
        tenant=tenant,
        sender_id=sender,
        type=type,
        content=content,
        client_msg_id=client_msg_id,
        reply_to=reply_to,
        metadata=metadata or {},
        stream_state=stream_state,
        stream_updated_at=timezone.now() if stream_state else None,
    )
    publish_message_created(tenant, message)
    hooks.messages_stored(tenant, [message])
    return message, True
