"""Seq allocation under concurrency, Redis data loss, and the skip-proof `after_seq` read.

See `messaging.seq` for why reads are skip-proof: commits are serialized per conversation.
"""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.conf import settings
from django.db import connection

from messaging import selectors, seq, services
from messaging.models import Conversation, Message

SENDS = 200


def _send(conversation_id: str, sender: str, content: str) -> int:
    try:
        message, _ = services.message_send(tenant="default", sender=sender, conversation_id=conversation_id, content=content)
        return message.seq
    finally:
        connection.close()  # each worker thread has its own connection


def _stored_seqs(conversation_id: str) -> list[int]:
    return list(Message.objects.filter(conversation_id=conversation_id).order_by("seq").values_list("seq", flat=True))


# --- the Redis backend on its own -----------------------------------------------------


@pytest.mark.redis
def test_redis_counter_is_floored_at_the_committed_maximum():
    from aiim_project.core.redis import sync_client

    allocator = seq.get_allocator()
    assert allocator.name == "redis"
    key = seq.seq_key("c1")
    assert allocator.allocate(conversation_id="c1", floor=41) == 42  # missing key: seeded from the floor
    sync_client().set(key, 3)  # restored from an old snapshot
    assert allocator.allocate(conversation_id="c1", floor=42) == 43
    assert allocator.allocate(conversation_id="c1", floor=0) == 44  # a low floor never lowers it
    assert allocator.raise_floor(conversation_id="c1", floor=10) == 44
    assert allocator.raise_floor(conversation_id="c1", floor=50) == 50
    assert allocator.allocate(conversation_id="c1", floor=0) == 51


@pytest.mark.redis
def test_redis_allocates_a_range_with_one_call_floored_like_one_seq():
    from aiim_project.core.redis import sync_client

    allocator = seq.get_allocator()
    key = seq.seq_key("c2")
    assert allocator.allocate(conversation_id="c2", floor=10, count=5) == 11  # missing key: 11..15
    assert int(sync_client().get(key)) == 15
    assert allocator.allocate(conversation_id="c2", floor=0, count=3) == 16  # 16..18, never lowered
    sync_client().set(key, 2)  # restored from an old snapshot
    assert allocator.allocate(conversation_id="c2", floor=18, count=4) == 19  # floored first: 19..22
    assert allocator.allocate(conversation_id="c2", floor=0) == 23  # count defaults to one
    assert int(sync_client().get(key)) == 23


@pytest.mark.redis
def test_redis_takes_a_range_back_only_while_nothing_was_allocated_after_it():
    from aiim_project.core.redis import sync_client

    allocator = seq.get_allocator()
    key = seq.seq_key("c4")
    first = allocator.allocate(conversation_id="c4", floor=5, count=3)  # 6..8
    assert allocator.give_back(conversation_id="c4", first=first, last=first + 2)
    assert int(sync_client().get(key)) == 5
    assert allocator.allocate(conversation_id="c4", floor=5, count=2) == 6  # handed out again: 6..7
    assert allocator.allocate(conversation_id="c4", floor=5) == 8  # someone else's, after it
    assert not allocator.give_back(conversation_id="c4", first=6, last=7)
    assert int(sync_client().get(key)) == 8  # never below a seq handed out since
    assert allocator.allocate(conversation_id="c4", floor=0) == 9


@pytest.mark.redis
def test_an_idle_conversations_counter_expires_and_comes_back_from_the_floor():
    from aiim_project.core.redis import sync_client

    allocator, client, key = seq.get_allocator(), sync_client(), seq.seq_key("c5")
    assert allocator.allocate(conversation_id="c5", floor=0, count=3) == 1  # 1..3
    assert 0 < client.ttl(key) <= seq.COUNTER_TTL_SECONDS  # every allocation renews it
    assert allocator.give_back(conversation_id="c5", first=2, last=3)  # back to 1: the TTL stays
    assert int(client.get(key)) == 1 and 0 < client.ttl(key) <= seq.COUNTER_TTL_SECONDS
    client.delete(key)
    assert 0 < allocator.raise_floor(conversation_id="c5", floor=1) and 0 < client.ttl(key) <= seq.COUNTER_TTL_SECONDS
    client.delete(key)  # expired: the next allocation starts from the committed maximum
    assert allocator.allocate(conversation_id="c5", floor=1) == 2
    assert 0 < client.ttl(key) <= seq.COUNTER_TTL_SECONDS


def test_database_backend_allocates_the_seq_after_the_floor_whatever_the_count():
    allocator = seq.DatabaseSeqAllocator()
    assert allocator.allocate(conversation_id="c3", floor=7) == 8
    assert allocator.allocate(conversation_id="c3", floor=7, count=5) == 8


def test_database_backend_in_embedded_mode():
    allocator = seq.get_allocator()
    assert allocator.name == ("redis" if settings.REDIS_URL else "database")


# --- many writers at once -------------------------------------------------------------


def _run_concurrent_sends(conversation_id: str, disrupt=None) -> list[int]:
    """SENDS messages from 8 threads; `disrupt(n)` runs after the n-th acknowledged send."""
    done = 0
    lock = threading.Lock()

    def one(i: int) -> int:
        nonlocal done
        got = _send(conversation_id, f"u{i % 4}", f"m{i}")
        with lock:
            done += 1
            n = done
        if disrupt:
            disrupt(n)
        return got

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(SENDS)))


@pytest.mark.django_db(transaction=True)
def test_concurrent_sends_get_distinct_gapless_seqs(make_conversation):
    conversation = make_conversation("u0", ["u1", "u2", "u3"])
    acked = _run_concurrent_sends(conversation.id)
    assert sorted(acked) == list(range(1, SENDS + 1))
    assert _stored_seqs(conversation.id) == list(range(1, SENDS + 1))
    assert Conversation.objects.get(pk=conversation.id).last_seq == SENDS


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_concurrent_sends_survive_redis_flush_and_a_counter_set_back(make_conversation):
    from aiim_project.core.redis import sync_client

    conversation = make_conversation("u0", ["u1", "u2", "u3"])
    key = seq.seq_key(conversation.id)
    disruptions = []

    def disrupt(n: int) -> None:
        if n == 60:
            sync_client().flushdb()
            disruptions.append("flushdb")
        elif n == 130:
            sync_client().set(key, 5)
            disruptions.append("set back")

    acked = _run_concurrent_sends(conversation.id, disrupt)
    assert disruptions == ["flushdb", "set back"]
    assert sorted(acked) == list(range(1, SENDS + 1))
    assert _stored_seqs(conversation.id) == list(range(1, SENDS + 1))
    assert int(sync_client().get(key)) == SENDS


@pytest.mark.e2e
def test_concurrent_sends_through_two_server_processes(daphne, make_conversation, token):
    """Two Daphne processes share the database (and Redis on that pass); the counter is
    also wiped mid-run there. Every send is acknowledged with a distinct seq, no gaps."""
    conversation = make_conversation("u0", ["u1", "u2", "u3"])
    servers = daphne(2)
    tokens = [token(f"u{i}") for i in range(4)]
    done = 0
    lock = threading.Lock()

    def one(i: int) -> tuple[int, int]:
        nonlocal done
        request = urllib.request.Request(
            f"{servers[i % 2].url}/api/aiim/messages",
            data=json.dumps({"conversation_id": conversation.id, "content": f"m{i}"}).encode(),
            headers={"Authorization": f"Bearer {tokens[i % 4]}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = (response.status, json.loads(response.read())["message"]["seq"])
        with lock:
            done += 1
            if done == 80 and settings.REDIS_URL:
                from aiim_project.core.redis import sync_client

                sync_client().flushdb()
        return answer

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, range(SENDS)))
    assert {status for status, _ in answers} == {201}
    assert sorted(s for _, s in answers) == list(range(1, SENDS + 1))
    assert _stored_seqs(conversation.id) == list(range(1, SENDS + 1))


# --- skip-proof reads -----------------------------------------------------------------


@pytest.fixture
def slow_allocation(monkeypatch):
    """Every allocation is followed by a random pause before the insert commits: the window
    in which a later seq could commit first if commits were not serialized."""
    real = seq.get_allocator()

    class Sleeping(type(real)):
        def allocate(self, **kwargs) -> int:
            value = super().allocate(**kwargs)
            time.sleep(random.uniform(0, 0.008))
            return value

    slow = object.__new__(Sleeping)
    slow.__dict__.update(real.__dict__)
    monkeypatch.setattr(services, "get_allocator", lambda: slow)
    return slow


@pytest.mark.django_db(transaction=True)
def test_a_reader_advancing_its_after_seq_cursor_sees_every_message(make_conversation, slow_allocation):
    writers, per_writer = 4, 25
    conversation = make_conversation("w0", [f"w{i}" for i in range(1, writers)])
    finished = threading.Event()
    seen: list[int] = []

    def read_until_done() -> None:
        cursor = 0
        try:
            while True:
                last_round = finished.is_set()
                page = selectors.messages_page(
                    tenant="default", user_id="w0", conversation_id=conversation.id, limit=200, after_seq=cursor
                )
                for message in page.messages:
                    seen.append(message.seq)
                    cursor = message.seq
                if last_round and not page.has_more:
                    return
        finally:
            connection.close()

    def write(w: int) -> None:
        for i in range(per_writer):
            _send(conversation.id, f"w{w}", f"{w}-{i}")

    reader = threading.Thread(target=read_until_done)
    reader.start()
    with ThreadPoolExecutor(writers) as pool:
        list(pool.map(write, range(writers)))
    finished.set()
    reader.join(60)
    assert not reader.is_alive()
    total = writers * per_writer
    assert seen == list(range(1, total + 1))  # every seq, once, in order
