"""The conversation row every message updates: `updated_at` moves at most once a second and
never backwards, and on PostgreSQL the migration's storage parameters and the write path keep
the other updates heap-only (HOT)."""

from __future__ import annotations

import importlib
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from messaging import services
from messaging.models import Conversation

pytestmark = pytest.mark.django_db
postgres_only = pytest.mark.skipif("connection.vendor != 'postgresql'", reason="PostgreSQL storage parameters")
STORAGE = importlib.import_module("messaging.migrations.0004_hot_row_storage").STORAGE


def send(conversation, text="hi"):
    return services.message_send(tenant="default", sender="alice", conversation_id=conversation.id, content=text)[0]


def test_updated_at_moves_to_the_second_of_the_latest_message(make_conversation):
    group = make_conversation("alice", ["bob"])
    Conversation.objects.filter(pk=group.pk).update(updated_at=timezone.now() - timedelta(minutes=5, microseconds=1))
    message = send(group)
    group.refresh_from_db()
    assert group.updated_at == services.activity_time(message.created_at)
    assert group.updated_at.microsecond == 0 and message.created_at - group.updated_at < timedelta(seconds=1)
    assert group.last_seq == message.seq


def test_updated_at_never_moves_backwards(make_conversation):
    group = make_conversation("alice", ["bob"])
    later = timezone.now() + timedelta(seconds=30)
    Conversation.objects.filter(pk=group.pk).update(updated_at=later)
    services.message_send_run(
        tenant="default", sender="alice", conversation_id=group.id, items=[services.SendInput(content="a"), services.SendInput(content="b")]
    )
    send(group)
    group.refresh_from_db()
    assert (group.updated_at, group.last_seq) == (later, 3)


@postgres_only
def test_migration_sets_the_storage_parameters():
    with connection.cursor() as cursor:
        cursor.execute("SELECT relname, reloptions FROM pg_class WHERE relname = ANY(%s)", [list(STORAGE)])
        found = {name: dict(option.split("=", 1) for option in options) for name, options in cursor.fetchall()}
    assert found == {table: {k: str(v) for k, v in params.items()} for table, params in STORAGE.items()}
    assert found["messaging_conversation"]["fillfactor"] == "70"


def _updates(table: str) -> tuple[int, int]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables WHERE relname = %s", [table])
        return cursor.fetchone()


@postgres_only
def test_sends_within_a_second_are_heap_only_updates(make_conversation):
    group = make_conversation("alice", ["bob"])
    # updated_at ahead of every send below: no send changes an indexed column.
    Conversation.objects.filter(pk=group.pk).update(updated_at=timezone.now() + timedelta(seconds=30))
    upd0, hot0 = _updates("messaging_conversation")
    for i in range(5):
        send(group, f"m{i}")
    services.message_send_run(tenant="default", sender="alice", conversation_id=group.id, items=[services.SendInput(content="r")] * 3)
    upd, hot = _updates("messaging_conversation")
    assert (upd - upd0, hot - hot0) == (6, 6)


@postgres_only
def test_a_streams_chunks_are_heap_only_updates_of_its_message(make_conversation):
    """No index of the message table keys on what a chunk changes (text, chunk count,
    stream_updated_at), and its pages keep room (migration 0005): every chunk's update of the
    message row is heap-only, through each write path."""
    from streaming import services as streams

    group = make_conversation("alice", ["bob"])
    ids = {"tenant": "default", "sender": "alice", "conversation_id": group.id, "client_msg_id": "s1"}
    streams.stream_append(**ids, chunk="a")  # the start inserts the row
    upd0, hot0 = _updates("messaging_message")
    for i in range(1, 4):
        streams.stream_append(**ids, chunk=f"b{i}")
    for i in range(4, 7):
        streams.stream_append_next(**ids, chunk=f"c{i}", chunk_index=i)
    message_id = streams.stream_append(**ids, chunk="d").message.id
    assert streams.streams_append_next(chunks=[streams.NextChunk(tenant="default", sender="alice", message_id=message_id, chunk="e")]) == [True]
    upd, hot = _updates("messaging_message")
    assert (upd - upd0, hot - hot0) == (8, 8)
    with connection.cursor() as cursor:
        cursor.execute("SELECT reloptions FROM pg_class WHERE relname = 'messaging_message'")
        assert cursor.fetchone()[0] == ["fillfactor=90"]
