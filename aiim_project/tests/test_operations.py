"""Operator commands (aiim_project/operations.py behind reseed_seq, purge_messages, aiim_stats;
streaming's abort_stale_streams) against the real database and, on the redis pass, the real
Redis. mint_token is covered in test_commands.py."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from messaging.models import Conversation, Message
from messaging.seq import seq_key


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def age(messages, days: int) -> None:
    Message.objects.filter(id__in=[m.id for m in messages]).update(created_at=timezone.now() - timedelta(days=days))


# --- reseed_seq ------------------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.django_db
def test_reseed_seq_rebuilds_counters_after_flushdb(make_conversation, send):
    from aiim_project.core.redis import sync_client

    busy = make_conversation("alice", ["bob"])
    quiet = make_conversation("alice", ["carol"])
    for _ in range(3):
        send(busy)
    send(quiet)
    redis = sync_client()
    redis.flushdb()  # our own database (REDIS_URL's db): never FLUSHALL on a shared server

    out = run("reseed_seq", "--batch-size", "1")  # one conversation per round trip

    assert "Checked 2 conversation(s); raised 2 counter(s)" in out
    assert int(redis.get(seq_key(busy.id))) == 3
    assert int(redis.get(seq_key(quiet.id))) == 1
    assert send(busy).seq == 4


@pytest.mark.redis
@pytest.mark.django_db
def test_reseed_seq_never_lowers_a_counter(make_conversation, send):
    from aiim_project.core.redis import sync_client

    conversation = make_conversation("alice", ["bob"])
    send(conversation)
    sync_client().set(seq_key(conversation.id), 50)

    out = run("reseed_seq")

    assert "raised 0 counter(s)" in out
    assert int(sync_client().get(seq_key(conversation.id))) == 50


@pytest.mark.redis
@pytest.mark.django_db
def test_reseed_seq_floor_survives_purged_messages(make_conversation, send):
    from aiim_project.core.redis import sync_client

    conversation = make_conversation("alice", ["bob"])
    messages = [send(conversation) for _ in range(3)]
    age(messages, days=400)
    run("purge_messages", "--before", (timezone.now() - timedelta(days=30)).date().isoformat())
    sync_client().flushdb()

    run("reseed_seq")

    assert int(sync_client().get(seq_key(conversation.id))) == 3


@pytest.mark.django_db
def test_reseed_seq_is_a_no_op_with_database_seq(settings, make_conversation):
    if settings.SEQ_BACKEND == "redis" and settings.REDIS_URL:
        pytest.skip("the embedded pass allocates seq in the database")
    make_conversation("alice", ["bob"])
    assert "nothing to reseed" in run("reseed_seq")


# --- purge_messages --------------------------------------------------------------------


@pytest.fixture
def history(make_conversation, send):
    """Five old and two recent messages in tenant "default", two old ones in tenant "other"."""
    mine = make_conversation("alice", ["bob"])
    theirs = make_conversation("carol", ["dan"], tenant="other")
    old = [send(mine, content=f"old {i}") for i in range(5)]
    recent = [send(mine, content="new"), send(mine, content="newer")]
    old_other = [send(theirs, sender="carol", tenant="other") for _ in range(2)]
    age(old, days=400)
    age(old_other, days=400)
    return mine, theirs, old, recent, old_other


CUTOFF = "--before"


def cutoff() -> str:
    return (timezone.now() - timedelta(days=30)).date().isoformat()


@pytest.mark.django_db
def test_purge_dry_run_reports_the_count_and_deletes_nothing(history):
    out = run("purge_messages", CUTOFF, cutoff(), "--dry-run")
    assert "Dry run: 7 message(s)" in out
    assert Message.objects.count() == 9


@pytest.mark.django_db
def test_purge_deletes_only_older_messages_in_batches(history):
    mine, theirs, old, recent, old_other = history

    out = run("purge_messages", CUTOFF, cutoff(), "--batch-size", "2")

    assert "Deleted 7 message(s)" in out
    assert out.count("deleted 2") == 3  # 2 + 2 + 2 + 1: small transactions
    assert set(Message.objects.values_list("id", flat=True)) == {m.id for m in recent}


@pytest.mark.django_db
def test_purge_for_one_tenant_keeps_the_others(history, send):
    mine, theirs, old, recent, old_other = history

    out = run("purge_messages", CUTOFF, cutoff(), "--tenant", "other")

    assert "Deleted 2 message(s) of tenant 'other'" in out
    assert not Message.objects.filter(tenant="other").exists()
    assert Message.objects.filter(tenant="default").count() == 7
    # A purged seq is never handed out again.
    assert Conversation.objects.get(id=theirs.id).last_seq == 2
    assert send(theirs, sender="carol", tenant="other").seq == 3


@pytest.mark.django_db
def test_purge_dry_run_with_unknown_tenant_counts_nothing(history):
    assert "Dry run: 0 message(s)" in run("purge_messages", CUTOFF, cutoff(), "--tenant", "nobody", "--dry-run")


@pytest.mark.django_db
def test_purge_refuses_a_bad_date():
    with pytest.raises(CommandError, match="--before"):
        run("purge_messages", CUTOFF, "last tuesday")


# --- aiim_stats ------------------------------------------------------------------------


@pytest.mark.django_db
def test_aiim_stats_counts_per_tenant(make_conversation, send):
    a = make_conversation("alice", ["bob", "eve"])
    b = make_conversation("alice", ["bob"], type="direct")
    send(a)
    send(a, sender="bob")
    send(b, stream_state="streaming", client_msg_id="s1")
    other = make_conversation("carol", ["dan"], tenant="other")
    send(other, sender="carol", tenant="other")

    rows = {r["tenant"]: r for r in json.loads(run("aiim_stats", "--json"))}

    assert rows["default"] | {"last_activity": None} == {
        "tenant": "default",
        "conversations": 2,
        "members": 5,
        "users": 3,
        "messages": 3,
        "open_streams": 1,
        "last_activity": None,
    }
    assert (rows["other"]["conversations"], rows["other"]["messages"], rows["other"]["users"]) == (1, 1, 2)
    table = run("aiim_stats", "--tenant", "other")
    assert table.splitlines()[0].split() == ["tenant", "conversations", "members", "users", "messages", "open_streams", "last_activity"]
    assert len(table.splitlines()) == 2 and table.splitlines()[1].startswith("other")


@pytest.mark.django_db
def test_aiim_stats_on_an_empty_database():
    assert json.loads(run("aiim_stats", "--json")) == []


# --- abort_stale_streams (streaming's command) -------------------------------------------


@pytest.mark.django_db
def test_abort_stale_streams_ends_only_idle_streams(make_conversation, settings):
    from streaming import services as streaming

    conversation = make_conversation("alice", ["bob"])

    def start(name: str) -> Message:
        return streaming.stream_append(
            tenant="default", sender="alice", conversation_id=conversation.id, client_msg_id=name, chunk="partial "
        ).message

    idle, live = start("idle"), start("live")
    Message.objects.filter(pk=idle.pk).update(
        stream_updated_at=timezone.now() - timedelta(seconds=settings.STREAM_IDLE_TIMEOUT + 5)
    )

    assert "aborted 1 stale stream(s)" in run("abort_stale_streams")

    idle.refresh_from_db()
    live.refresh_from_db()
    assert (idle.stream_state, idle.content) == ("aborted", "partial ")
    assert live.stream_state == "streaming"
