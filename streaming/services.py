"""Stream lifecycle: append a chunk (the first one starts the stream), abort, reap.
A stream is one `messaging.Message`; storage, events and races: docs/streaming.md.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from aiim_project.core import events
from aiim_project.core.checks import MAX_OBJECT_ID_LENGTH, check_id, not_a_member
from aiim_project.core.errors import Conflict, Forbidden, Invalid, NotFound, TooLarge
from aiim_project.core.metrics import STREAM_CHUNKS
from messaging.models import Conversation, Message, MessageType, StreamState, new_id
from messaging.rendering import StatusView, message_dict
from messaging.selectors import cursors_by_conversation, member_cursors
from messaging.services import (
    DependentUpdate,
    check_content_size,
    encoded_size,
    insert_with_seq,
    lock_for_stream_start,
    publish_message_created,
)

from . import coalesce, storage

# A streamed reply comes from an AI model: the message type is fixed, clients need not say it.
STREAM_MESSAGE_TYPE = MessageType.AI
REAP_BATCH = 500


@dataclass(frozen=True)
class ChunkResult:
    message: Message  # the stream after this call
    started: bool  # this chunk created the stream (REST answers 201)
    chunk_index: int
    applied: bool  # False for a repeat of an index already accepted
    stream_end: bool  # the stream is completed and this chunk was its last
    # Set only by `stream_append_next(hold_event=True)` when it wrote the chunk: publishes its
    # event (the caller calls it once, after its answer).
    publish: Callable[[], None] | None = None


def check_stream_ids(conversation_id: Any, client_msg_id: Any) -> None:
    check_id(conversation_id, "conversation_id", max_length=MAX_OBJECT_ID_LENGTH, detail="conversation_id must be a conversation id.")
    check_id(client_msg_id, "client_msg_id", detail="client_msg_id (the stream's id) must be a non-empty string.")


def _check_chunk(chunk: Any, chunk_index: Any, stream_end: Any) -> None:
    if not isinstance(chunk, str):
        raise Invalid("chunk must be a string.", errors={"chunk": ["Expected a string."]})
    if chunk_index is not None and (isinstance(chunk_index, bool) or not isinstance(chunk_index, int) or chunk_index < 0):
        raise Invalid("chunk_index must be an integer >= 0.", errors={"chunk_index": ["Invalid."]})
    if not isinstance(stream_end, bool):
        raise Invalid("stream_end must be a boolean.", errors={"stream_end": ["Expected a boolean."]})


def _own_stream(*, tenant: str, sender: str, conversation_id: str, client_msg_id: str, lock: bool) -> Message | None:
    """The caller's message named client_msg_id, checked: still a member, and a stream."""
    message = storage.find_stream(
        tenant=tenant, conversation_id=conversation_id, sender=sender, client_msg_id=client_msg_id, lock=lock
    )
    if message is None:
        return None
    if not message.is_member:
        raise not_a_member()
    if message.stream_state is None:
        raise Conflict("client_msg_id names an ordinary message, not a stream.")
    return message


def _lock_for_stream(*, tenant: str, sender: str, conversation_id: str, client_msg_id: str) -> tuple[Conversation, str | None]:
    """Lock and authorize the sender as the send path does, in its one statement: (the
    conversation, the id of the sender's message named client_msg_id). A stream id names one
    stream per conversation: another sender's stream of that name is a 403."""
    conversation, taken, others = lock_for_stream_start(
        tenant=tenant, conversation_id=conversation_id, sender=sender, client_msg_id=client_msg_id
    )
    if others:
        raise Forbidden("Only the stream's sender may write to it.")
    return conversation, taken


def _publish_updated(message: Message, statuses: StatusView | None = None) -> None:
    """`statuses` holds the conversation's cursors now (read here when not given): the others
    may have read the stream while it was written, so its final state need not be "sent"."""
    if statuses is None:
        statuses = StatusView(member_cursors(message.conversation_id))
    coalesce.publish_stream_event_on_commit(
        [events.conversation_group(message.tenant, message.conversation_id)],
        message.id,
        events.build(
            message.conversation_id,
            "message.updated",
            {"message": message_dict(message, statuses.status(message))},
            seq=message.seq,
            message_id=message.id,
            stream_state=message.stream_state,
        ),
    )


def _apply(message: Message, *, index: int, chunk: str, stream_end: bool, now: datetime) -> bool:
    """Append chunk `index` if the stream is still open at exactly that index."""
    text = (message.content or "") + chunk
    check_content_size(text)  # MAX_MESSAGE_BYTES bounds the whole text, not one chunk
    state = StreamState.COMPLETED if stream_end else StreamState.STREAMING
    if not storage.append_chunk(message_id=message.pk, index=index, chunk=chunk, text=text, state=state, now=now):
        return False
    message.content, message.stream_chunk_count, message.stream_updated_at, message.stream_state = text, index + 1, now, state
    _notify_chunk(message, index=index, chunk=chunk, stream_end=stream_end)
    return True


def _notify_chunk(message: Message, *, index: int, chunk: str, stream_end: bool) -> None:
    groups = [events.conversation_group(message.tenant, message.conversation_id)]
    coalesce.publish_chunk_on_commit(groups, message, index=index, chunk=chunk, stream_end=stream_end)
    if stream_end:
        _publish_updated(message)
    transaction.on_commit(STREAM_CHUNKS.inc)


def _start(
    *,
    tenant: str,
    sender: str,
    conversation_id: str,
    client_msg_id: str,
    chunk: str,
    chunk_index: int | None,
    stream_end: bool,
    now: datetime,
    metadata: dict | None = None,
    on_start: Sequence[DependentUpdate] = (),
) -> ChunkResult | None:
    """Create the stream with its first chunk; None if another request created it first."""
    check_content_size(chunk)  # before the seq is allocated: a refused chunk consumes none
    # One round trip (with many assistant replies starting at once, the ORM's version was
    # most of a start's CPU).
    conversation, taken = _lock_for_stream(tenant=tenant, sender=sender, conversation_id=conversation_id, client_msg_id=client_msg_id)
    if taken is not None:
        return None
    if chunk_index not in (None, 0):
        raise Conflict("A stream starts at chunk_index 0.", expected_chunk_index=0)
    # Stored with its first chunk (the chunk row in the same statement on PostgreSQL);
    # announced as created empty, then the chunk, as every stream is.
    message_id = new_id()
    message = insert_with_seq(
        conversation,
        dependents=(storage.chunk_row(message_id=message_id, index=0, chunk=chunk), *on_start),
        id=message_id,
        tenant=tenant,
        sender_id=sender,
        type=STREAM_MESSAGE_TYPE,
        content=chunk,
        client_msg_id=client_msg_id,
        metadata=metadata or {},
        stream_state=StreamState.COMPLETED if stream_end else StreamState.STREAMING,
        stream_chunk_count=1,
        stream_updated_at=now,
    )
    created = copy.copy(message)
    created.content, created.stream_chunk_count, created.stream_state = "", 0, StreamState.STREAMING
    publish_message_created(tenant, created)  # built now
    _notify_chunk(message, index=0, chunk=chunk, stream_end=stream_end)
    return ChunkResult(message=message, started=True, chunk_index=0, applied=True, stream_end=stream_end)


def stream_append(
    *,
    tenant: str,
    sender: str,
    conversation_id: str,
    client_msg_id: str,
    chunk: str,
    chunk_index: int | None = None,
    stream_end: bool = False,
    metadata: dict | None = None,
    on_start: Sequence[DependentUpdate] = (),
    starting: bool = False,
    savepoint: bool = True,
) -> ChunkResult:
    """Accept one chunk of the caller's stream `client_msg_id`, starting it if it is new
    (with `metadata` and `on_start`, which only a starting chunk uses: the assistants app's
    `run_id`, and its run recording the reply in the stream's INSERT statement).
    `starting`: the caller expects no such stream yet, so the start is tried first (its
    locking statement also finds an existing one); the answer is the same either way.
    `savepoint=False`: inside a transaction that its caller rolls back whole on any error
    (the runner's group commit), two statements fewer.

    `chunk_index` defaults to the next one. A repeat of an accepted index is acknowledged
    again and changes nothing (even after the stream ended: it is a retry, not new text);
    an index beyond the next one, or any new chunk for an ended stream, is a 409.
    """
    with transaction.atomic(savepoint=savepoint):
        check_stream_ids(conversation_id, client_msg_id)
        _check_chunk(chunk, chunk_index, stream_end)
        now = timezone.now()
        start = partial(
            _start,
            tenant=tenant,
            sender=sender,
            conversation_id=conversation_id,
            client_msg_id=client_msg_id,
            chunk=chunk,
            chunk_index=chunk_index,
            stream_end=stream_end,
            now=now,
            metadata=metadata,
            on_start=on_start,
        )
        if starting or chunk_index == 0:
            started = start()
            if started is not None:
                return started
        for attempt in range(3):
            message = _own_stream(
                tenant=tenant, sender=sender, conversation_id=conversation_id, client_msg_id=client_msg_id, lock=attempt > 0
            )
            if message is None:
                started = start()
                if started is not None:
                    return started
                continue
            expected = message.stream_chunk_count
            index = expected if chunk_index is None else chunk_index
            if index < expected:
                ended_here = message.stream_state == StreamState.COMPLETED and index == expected - 1
                return ChunkResult(message=message, started=False, chunk_index=index, applied=False, stream_end=ended_here)
            if message.stream_state != StreamState.STREAMING:
                raise Conflict(f"The stream has ended ({message.stream_state}).", stream_state=message.stream_state)
            if index > expected:
                raise Conflict(f"chunk_index {index} is ahead; the next expected is {expected}.", expected_chunk_index=expected)
            if _apply(message, index=index, chunk=chunk, stream_end=stream_end, now=now):
                return ChunkResult(message=message, started=False, chunk_index=index, applied=True, stream_end=stream_end)
        # Only reachable if the row changed under a lock, which the lock forbids.
        raise Conflict("The stream changed while this chunk was written; retry.")


def stream_append_next(
    *,
    tenant: str,
    sender: str,
    conversation_id: str,
    client_msg_id: str,
    chunk: str,
    chunk_index: int | None = None,
    stream_end: bool = False,
    hold_event: bool = False,
) -> ChunkResult:
    """`stream_append` for a chunk that cannot start a stream (the WebSocket handler's
    chunks with an index > 0): the next chunk of an open stream is written, checked and
    committed in one statement on PostgreSQL (docs/streaming.md, "One chunk in one
    statement"); anything else (a repeat, an error, the last chunk, SQLite) goes through
    `stream_append` and gets exactly its answer. The result's message has its text deferred.
    `hold_event`: a chunk written in one statement leaves its event to `result.publish`, so
    the WebSocket ack goes out before the fan-out work."""
    check_stream_ids(conversation_id, client_msg_id)
    applied = None
    if (
        connection.vendor == "postgresql"
        and stream_end is False
        and isinstance(chunk, str)
        and type(chunk_index) is int
        and chunk_index > 0
    ):
        try:
            size = encoded_size(chunk) - 2  # without the quotes: the stored text's have them
        except Invalid:  # a NUL character: refused by stream_append
            size = None
        if size is not None:
            applied = storage.append_next(
                tenant=tenant,
                conversation_id=conversation_id,
                sender=sender,
                client_msg_id=client_msg_id,
                chunk=chunk,
                chunk_size=size,
                index=chunk_index,
                max_bytes=settings.MAX_MESSAGE_BYTES,
                now=timezone.now(),
            )
    if applied is None:
        return stream_append(
            tenant=tenant,
            sender=sender,
            conversation_id=conversation_id,
            client_msg_id=client_msg_id,
            chunk=chunk,
            chunk_index=chunk_index,
            stream_end=stream_end,
        )
    groups = [events.conversation_group(applied.tenant, applied.conversation_id)]
    publish = partial(coalesce.publish_chunks_now, groups, applied, first=chunk_index, last=chunk_index, delta=chunk, stream_end=False)
    if not hold_event or connection.in_atomic_block:
        # Committed (autocommit) unless a caller's transaction holds it: then after that commit.
        transaction.on_commit(publish, robust=True)
        publish = None
    transaction.on_commit(STREAM_CHUNKS.inc)
    return ChunkResult(message=applied, started=False, chunk_index=chunk_index, applied=True, stream_end=False, publish=publish)


@dataclass(frozen=True)
class NextChunk:
    """The next chunk of the sender's open stream `message_id` (`streams_append_next`)."""

    tenant: str
    sender: str
    message_id: str
    chunk: str


def streams_append_next(*, chunks: Sequence[NextChunk]) -> list[bool]:
    """The next chunk of many open streams in one statement (PostgreSQL; the assistants'
    group commit), inside the caller's transaction, events after its commit. True where
    `stream_append` would have taken the chunk as that stream's next one with nothing more
    to do; False (always on SQLite) leaves that chunk to the caller's `stream_append`, which
    gives the exact answer (ended, no longer a member, too large). Message ids are distinct."""
    if connection.vendor != "postgresql" or not chunks:
        return [False] * len(chunks)
    appends = []
    for item in chunks:
        try:
            size = encoded_size(item.chunk) - 2  # without the quotes: the stored text's have them
        except Invalid:  # a NUL character: stream_append refuses it
            continue
        if item.chunk:
            appends.append((item.message_id, item.tenant, item.sender, item.chunk, size))
    if not appends:
        return [False] * len(chunks)
    applied = {
        message.id: message
        for message in storage.append_next_many(appends=appends, max_bytes=settings.MAX_MESSAGE_BYTES, now=timezone.now())
    }
    for item in chunks:
        message = applied.get(item.message_id)
        if message is not None:
            index = message.stream_chunk_count - 1
            groups = [events.conversation_group(message.tenant, message.conversation_id)]
            coalesce.publish_chunks_on_commit(groups, message, first=index, last=index, delta=item.chunk, stream_end=False)
            transaction.on_commit(STREAM_CHUNKS.inc)
    return [item.message_id in applied for item in chunks]


@dataclass(frozen=True)
class ChunkInput:
    """One chunk of a run, as the client sent it (checked by the service)."""

    chunk: Any
    chunk_index: Any = None
    stream_end: Any = False


@dataclass
class _Plan:
    """What a run does to a stream read at `first` = its chunk_count."""

    first: int
    results: list[tuple[int, bool, bool]]  # (chunk_index, applied, stream_end) per chunk taken
    parts: list[str]  # the applied chunks' text, in index order
    state: str


def _plan_run(message: Message, chunks: Sequence[ChunkInput], *, size_each: bool = False) -> _Plan:
    """The longest prefix of `chunks` that `stream_append`, called once per chunk, would
    accept: each chunk decided against the stream as the chunks before it left it. It
    stops before the first chunk that would be refused (bad input, ahead, ended, too large)."""
    expected, state, text = message.stream_chunk_count, message.stream_state, message.content or ""
    plan = _Plan(first=expected, results=[], parts=[], state=state)
    for item in chunks:
        try:
            _check_chunk(item.chunk, item.chunk_index, item.stream_end)
        except Invalid:
            break
        index = expected if item.chunk_index is None else item.chunk_index
        if index < expected:  # a repeat: acked again, nothing changes
            plan.results.append((index, False, state == StreamState.COMPLETED and index == expected - 1))
            continue
        if state != StreamState.STREAMING or index > expected:
            break
        if size_each:
            try:
                check_content_size(text + item.chunk)
            except (TooLarge, Invalid):  # over the size limit; a NUL character
                break
            text += item.chunk
        plan.parts.append(item.chunk)
        plan.results.append((index, True, item.stream_end))
        expected += 1
        if item.stream_end:
            state = StreamState.COMPLETED
    plan.state = state
    if plan.parts and not size_each:
        # The text as stored: within MAX_MESSAGE_BYTES and without NUL characters. The size
        # only grows with each chunk, so one check of the whole run is enough when it passes;
        # when it does not, decide again chunk by chunk to find the first chunk it refuses.
        try:
            check_content_size(text + "".join(plan.parts))
        except (TooLarge, Invalid):
            return _plan_run(message, chunks, size_each=True)
    return plan


@transaction.atomic
def stream_append_run(
    *, tenant: str, sender: str, conversation_id: str, client_msg_id: str, chunks: Sequence[ChunkInput]
) -> list[ChunkResult]:
    """Accept, in one transaction, the longest prefix of `chunks` that `stream_append` would
    accept one by one; [] if the caller has no such stream. Rules, events and queries:
    docs/streaming.md, "Runs"."""
    check_stream_ids(conversation_id, client_msg_id)
    now = timezone.now()
    for attempt in range(3):
        message = storage.find_stream(
            tenant=tenant, conversation_id=conversation_id, sender=sender, client_msg_id=client_msg_id, lock=attempt > 0
        )
        if message is None or not message.is_member or message.stream_state is None:
            return []
        plan = _plan_run(message, chunks)
        if plan.parts:
            text = (message.content or "") + "".join(plan.parts)
            if not storage.append_chunks(
                message_id=message.pk, first=plan.first, chunks=plan.parts, text=text, state=plan.state, now=now
            ):
                continue  # another writer or the reaper got there first: decide again, under the lock
            message.content, message.stream_chunk_count = text, plan.first + len(plan.parts)
            message.stream_updated_at, message.stream_state = now, plan.state
            ended = plan.state == StreamState.COMPLETED
            coalesce.publish_chunks_on_commit(
                [events.conversation_group(message.tenant, message.conversation_id)],
                message,
                first=plan.first,
                last=message.stream_chunk_count - 1,
                delta="".join(plan.parts),
                stream_end=ended,
            )
            if ended:
                _publish_updated(message)
            transaction.on_commit(partial(STREAM_CHUNKS.inc, len(plan.parts)))
        return [
            ChunkResult(message=message, started=False, chunk_index=index, applied=applied, stream_end=end)
            for index, applied, end in plan.results
        ]
    # Only reachable if the row changed under a lock, which the lock forbids.
    raise Conflict("The stream changed while these chunks were written; retry.")


END_STATES = (StreamState.ABORTED, StreamState.STOPPED, StreamState.FAILED)


@transaction.atomic
def stream_abort(
    *, tenant: str, sender: str, conversation_id: str, client_msg_id: str, state: str = StreamState.ABORTED
) -> Message:
    """End the caller's open stream as `aborted` (or `stopped` / `failed`, for the assistants
    app's replies), keeping the text that arrived."""
    if state not in END_STATES:
        raise Invalid("state must be aborted, stopped or failed.", errors={"state": ["Invalid choice."]})
    check_stream_ids(conversation_id, client_msg_id)
    message = _own_stream(tenant=tenant, sender=sender, conversation_id=conversation_id, client_msg_id=client_msg_id, lock=True)
    if message is None:
        _lock_for_stream(tenant=tenant, sender=sender, conversation_id=conversation_id, client_msg_id=client_msg_id)
        raise NotFound("Stream not found.")
    if message.stream_state != StreamState.STREAMING:
        raise Conflict(f"The stream has ended ({message.stream_state}).", stream_state=message.stream_state)
    now = timezone.now()
    Message.objects.filter(pk=message.pk).update(stream_state=state, stream_updated_at=now)
    message.stream_state, message.stream_updated_at = state, now
    _publish_updated(message)
    return message


@transaction.atomic
def streams_reap(*, now: datetime | None = None, limit: int = REAP_BATCH) -> list[Message]:
    """Abort streams with no chunk for STREAM_IDLE_TIMEOUT seconds, keeping what arrived.
    Safe in every process at once (docs/streaming.md, "Reaper")."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.STREAM_IDLE_TIMEOUT)
    stale = list(
        Message.objects.select_for_update(skip_locked=True)
        .filter(stream_state=StreamState.STREAMING, stream_updated_at__lt=cutoff)
        .order_by("stream_updated_at")[:limit]
    )
    if not stale:
        return []
    Message.objects.filter(pk__in=[m.pk for m in stale]).update(stream_state=StreamState.ABORTED, stream_updated_at=now)
    members = cursors_by_conversation({m.conversation_id for m in stale})  # one query for the batch
    for message in stale:
        message.stream_state, message.stream_updated_at = StreamState.ABORTED, now
        _publish_updated(message, StatusView(members.get(message.conversation_id, [])))
    return stale
