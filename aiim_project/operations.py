"""Operator maintenance: seq counter repair, retention, per-tenant counts. The management commands
are thin adapters; these work across tenants on purpose, with an explicit tenant filter where one applies.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

from django.db import transaction
from django.db.models import Count, Max, Q

from aiim_project.core import redis as aiim_redis
from messaging.models import Conversation, Member, Message, StreamState
from messaging.seq import get_allocator, seq_key


def seq_floors(*, batch_size: int = 1000) -> Iterator[tuple[str, int]]:
    """(conversation id, highest seq ever committed) for every conversation: `last_seq`, kept
    when old messages are purged, so it is the floor, not max(seq)."""
    rows = Conversation.objects.annotate(max_seq=Max("messages__seq")).values_list("id", "last_seq", "max_seq")
    for conversation_id, last_seq, max_seq in rows.order_by("id").iterator(chunk_size=batch_size):
        yield conversation_id, max(last_seq, max_seq or 0)


@dataclass
class ReseedResult:
    backend: str
    checked: int = 0
    raised: list[str] = field(default_factory=list)


def seq_counters_reseed(*, batch_size: int = 1000) -> ReseedResult:
    """Raise every Redis seq counter to the database's floor, never lower one. Allocation floors
    it anyway; this sets counters right before traffic returns (after a Redis flush or restore)."""
    allocator = get_allocator()
    result = ReseedResult(backend=allocator.name)
    if allocator.name != "redis":
        return result
    client = aiim_redis.sync_client()
    batch: list[tuple[str, int]] = []
    for row in seq_floors(batch_size=batch_size):
        batch.append(row)
        if len(batch) == batch_size:
            _reseed_batch(client, allocator, batch, result)
            batch = []
    _reseed_batch(client, allocator, batch, result)
    return result


def _reseed_batch(client, allocator, batch: list[tuple[str, int]], result: ReseedResult) -> None:
    """One round trip reads a batch of counters; only those behind are raised (atomically,
    by the allocator's floor script, so a concurrent INCR is never lowered)."""
    if not batch:
        return
    counters = client.mget([seq_key(conversation_id) for conversation_id, _ in batch])
    result.checked += len(batch)
    for (conversation_id, floor), counter in zip(batch, counters):
        if int(counter or 0) < floor:
            allocator.raise_floor(conversation_id=conversation_id, floor=floor)
            result.raised.append(conversation_id)


def _purge_queryset(*, before: datetime, tenant: str | None):
    qs = Message.objects.filter(created_at__lt=before)
    if tenant is not None:
        qs = qs.filter(tenant=tenant)
    return qs


def messages_purgeable_count(*, before: datetime, tenant: str | None = None) -> int:
    return _purge_queryset(before=before, tenant=tenant).count()


@transaction.atomic
def _purge_batch(*, before: datetime, tenant: str | None, batch_size: int) -> int:
    ids = list(_purge_queryset(before=before, tenant=tenant).order_by("created_at", "id").values_list("id", flat=True)[:batch_size])
    if not ids:
        return 0
    Message.objects.filter(id__in=ids).delete()
    return len(ids)


def messages_purge(*, before: datetime, tenant: str | None = None, batch_size: int = 1000) -> Iterator[int]:
    """Delete messages created before `before`, one short transaction per batch, yielding each
    batch's size. `last_seq` stays (a purged seq is never reused); no events fire."""
    while deleted := _purge_batch(before=before, tenant=tenant, batch_size=batch_size):
        yield deleted


@dataclass
class TenantStats:
    tenant: str
    conversations: int = 0
    members: int = 0
    users: int = 0
    messages: int = 0
    open_streams: int = 0
    last_activity: datetime | None = None


def tenant_stats(*, tenant: str | None = None) -> list[TenantStats]:
    """Counts per tenant in three grouped queries, whatever the number of tenants."""
    scope = Q(tenant=tenant) if tenant is not None else Q()
    stats: dict[str, TenantStats] = {}

    def row(name: str) -> TenantStats:
        return stats.setdefault(name, TenantStats(tenant=name))

    for r in Conversation.objects.filter(scope).values("tenant").annotate(n=Count("id"), last=Max("updated_at")).order_by():
        s = row(r["tenant"])
        s.conversations, s.last_activity = r["n"], r["last"]
    for r in Member.objects.filter(scope).values("tenant").annotate(n=Count("id"), users=Count("user_id", distinct=True)).order_by():
        s = row(r["tenant"])
        s.members, s.users = r["n"], r["users"]
    open_streams = Count("id", filter=Q(stream_state=StreamState.STREAMING))
    for r in Message.objects.filter(scope).values("tenant").annotate(n=Count("id"), streams=open_streams).order_by():
        s = row(r["tenant"])
        s.messages, s.open_streams = r["n"], r["streams"]
    return [stats[name] for name in sorted(stats)]
