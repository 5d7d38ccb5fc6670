"""Group commit of sends (`services.message_send_run`): a run stores a prefix of its items in
one transaction exactly as `message_send` would store each of them, one at a time, as a new
message; what it leaves gets its usual answer from `message_send`."""

from __future__ import annotations

import asyncio
import random
import threading

import orjson
import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from django.db import connection, transaction

from aiim_project.core import events
from aiim_project.core.errors import AiimError, Conflict, Forbidden, NotFound
from messaging import seq, services
from messaging.models import Conversation, Message
from messaging.services import SendInput
from tests.support.layer import LayerListener

pytestmark = pytest.mark.django_db


def run(conv, items, sender="alice", tenant="default", conversation_id=None):
    return services.message_send_run(
        tenant=tenant, sender=sender, conversation_id=conversation_id or conv.id, items=[SendInput(**i) for i in items]
    )


def one(conv, item, sender="alice", tenant="default"):
    return services.message_send(tenant=tenant, sender=sender, conversation_id=conv.id, **item)


def row_of(message):
    return (message.seq, message.sender_id, message.type, message.content, message.client_msg_id, message.reply_to, message.metadata)


def stored(conv):
    return [row_of(m) for m in Message.objects.filter(conversation_id=conv.id).order_by("seq")]


def counter(conversation_id):
    if not settings.REDIS_URL:
        return None
    from aiim_project.core.redis import sync_client

    value = sync_client().get(seq.seq_key(conversation_id))
    return None if value is None else int(value)


# --- a run of valid items ---------------------------------------------------------------


@pytest.mark.parametrize("with_ids", [False, True])
def test_a_run_stores_every_item_in_order_with_consecutive_seqs(make_conversation, send, with_ids):
    conv = make_conversation("alice", ["bob"])
    send(conv, "bob", "before")
    items = [
        {"content": f"m{i}", **({"client_msg_id": f"k{i}"} if with_ids else {})} for i in range(5)
    ] + [{"content": {"rich": [1, 2]}, "type": "ai", "metadata": {"model": "x"}}]
    before = Conversation.objects.get(pk=conv.pk).updated_at
    messages = run(conv, items)
    assert [m.seq for m in messages] == [2, 3, 4, 5, 6, 7]
    assert [row_of(m) for m in messages] == stored(conv)[1:]
    assert stored(conv)[1:] == [
        *[(2 + i, "alice", "text", f"m{i}", f"k{i}" if with_ids else None, None, {}) for i in range(5)],
        (7, "alice", "ai", {"rich": [1, 2]}, None, None, {"model": "x"}),
    ]
    conv.refresh_from_db()
    assert conv.last_seq == 7 and conv.updated_at == max(before, services.activity_time(messages[-1].created_at))
    assert all(m.tenant == "default" and m.stream_state is None for m in Message.objects.filter(conversation=conv))
    assert send(conv, "bob", "after").seq == 8
    if settings.REDIS_URL:
        assert counter(conv.id) == 8


@pytest.mark.parametrize("with_ids", [False, True])
@pytest.mark.parametrize("length", [2, 40])
def test_a_run_costs_the_same_queries_whatever_its_length(make_conversation, send, django_assert_num_queries, length, with_ids):
    conv = make_conversation("alice", ["bob"])
    send(conv, "alice", "first")
    items = [{"content": f"m{i}", **({"client_msg_id": f"k{i}"} if with_ids else {})} for i in range(length)]
    # SAVEPOINT, the locking SELECT, (the taken client_msg_ids), one INSERT of every row,
    # the conversation's UPDATE (one statement with the INSERT on PostgreSQL), RELEASE: one
    # transaction, whatever the run's length.
    folded = 1 if connection.vendor == "postgresql" else 0
    with django_assert_num_queries((6 if with_ids else 5) - folded):
        messages = run(conv, items)
    assert [m.seq for m in messages] == list(range(2, length + 2))
    assert Message.objects.filter(conversation=conv).count() == length + 1


def test_a_run_is_one_transaction_all_or_nothing(make_conversation, send, monkeypatch):
    """A failure after the rows are written leaves nothing of the run."""
    from django.db import DatabaseError

    conv = make_conversation("alice", ["bob"])
    send(conv, "alice", "one")
    store = services._store_messages

    def store_then_fail(conversation_id, messages, *rest):
        assert store(conversation_id, messages, *rest)
        with connection.cursor() as cursor:
            cursor.execute("UPDATE no_such_table SET a = 1")

    monkeypatch.setattr(services, "_store_messages", store_then_fail)
    with pytest.raises(DatabaseError):
        run(conv, [{"content": "a"}, {"content": "b", "client_msg_id": "b"}])
    monkeypatch.undo()
    assert [r[3] for r in stored(conv)] == ["one"]
    assert Conversation.objects.get(pk=conv.pk).last_seq == 1
    # The failed run's 2 and 3 went back to the counter: sent again (as the gateway does,
    # one at a time), the messages leave no gap that no sender got an error for.
    assert counter(conv.id) in (1, None)
    assert one(conv, {"content": "a"})[0].seq == 2
    assert [m.seq for m in run(conv, [{"content": "b", "client_msg_id": "b"}, {"content": "c"}])] == [3, 4]


# --- equivalence with message_send one at a time ------------------------------------------


def _resolve(item, first_id):
    return {**item, "reply_to": first_id} if item.get("reply_to") == "FIRST" else item


def _answer(result):
    """What a client gets for one item: the error, or the message and whether it is new."""
    if isinstance(result, AiimError):
        return ("error", type(result).__name__, result.code, result.detail, result.errors, result.extra)
    message, created = result
    return ("ok", created, message.seq, message.type, message.content, message.client_msg_id, message.metadata, message.reply_to is not None)


def _one_answer(conv, item):
    try:
        return _answer(one(conv, item))
    except AiimError as exc:
        return _answer(exc)


def one_at_a_time(conv, items, first_id):
    return [_one_answer(conv, _resolve(i, first_id)) for i in items]


def in_runs(conv, items, first_id, prefixes=None):
    """What the gateway does: the run's prefix, then the first item it left through
    message_send alone, then the rest as a run again."""
    items = [_resolve(i, first_id) for i in items]
    got = []
    while items:
        messages = run(conv, items) if len(items) > 1 else []
        if prefixes is not None:
            prefixes.append((len(items), len(messages)))
        got += [_answer((m, True)) for m in messages]
        items = items[len(messages):]
        if items:
            got.append(_one_answer(conv, items[0]))
            items = items[1:]
    return got


def _random_item(rng, ids):
    kind = rng.random()
    item = {"content": rng.choice(["x", "yy", {"a": [1, "é好"]}, ["l"], 0, False])}
    if kind < 0.35:
        pass
    elif kind < 0.55:
        item["client_msg_id"] = rng.choice(ids)  # repeats within the run, and one already stored
    elif kind < 0.6:
        item["content"] = rng.choice(["", None])
    elif kind < 0.65:
        item["type"] = rng.choice(["sticker", None, 3])
    elif kind < 0.7:
        item["metadata"] = rng.choice([["not", "a", "dict"], "m", {"n": 2**80}, {"nul": "a\x00"}])
    elif kind < 0.75:
        item["metadata"] = {"ok": rng.randint(0, 9)}
    elif kind < 0.8:
        item["reply_to"] = rng.choice(["FIRST", "no-such-message", 7])
    elif kind < 0.84:
        item["client_msg_id"] = rng.choice(["", 7, "n\x00l", "x" * 201])
    elif kind < 0.88:
        item["content"] = "z" * rng.randint(150, 300)  # over the size limit
    elif kind < 0.92:
        item["type"] = rng.choice(["ai", "system"])
    else:
        item["content"] = "nul\x00"
    return item


def test_runs_answer_every_item_exactly_as_message_send_one_at_a_time(make_conversation, settings):
    """Random runs mixing invalid content, bad types, bad metadata, reply_to, client_msg_ids
    repeated within the run or already stored, oversize: handled as the gateway handles them
    (run, first leftover alone, run again), every item gets the answer it gets alone, the
    conversations end with the same rows, and each run stored exactly the leading items that
    message_send would store as new messages (it stops early only at a reply_to)."""
    settings.MAX_MESSAGE_BYTES = 120
    rng = random.Random()
    seed = rng.randrange(10**6)
    rng.seed(seed)
    for trial in range(25):
        convs = [make_conversation("alice", ["bob"]) for _ in range(3)]
        firsts = [one(c, {"content": "first", "client_msg_id": "stored"})[0].id for c in convs]
        ids = ["stored", "k1", "k2", "k3"]
        items = [_random_item(rng, ids) for _ in range(rng.randint(2, 14))]
        expected = one_at_a_time(convs[0], items, firsts[0])
        prefixes = []
        assert in_runs(convs[1], items, firsts[1], prefixes) == expected, (seed, trial, items)
        strip = lambda rows: [(r[0], r[2], r[3], r[4], r[5] is not None, r[6]) for r in rows]
        assert strip(stored(convs[1])) == strip(stored(convs[0])), (seed, trial, items)
        # The first run's prefix: up to the first item that message_send would not store as
        # new (an error or a repeat), or that has a reply_to.
        new = [a[0] == "ok" and a[1] for a in expected]
        stop = next((k for k, item in enumerate(items) if not new[k] or item.get("reply_to") is not None), len(items))
        assert prefixes[0] == (len(items), stop), (seed, trial, items, prefixes)
        # A whole run handed to message_send_run once: exactly that prefix, nothing else written.
        before = stored(convs[2])
        messages = run(convs[2], [_resolve(i, firsts[2]) for i in items])
        assert len(messages) == stop, (seed, trial, items)
        assert stored(convs[2]) == before + [row_of(m) for m in messages]
        assert [_answer((m, True)) for m in messages] == expected[:stop]


def test_a_client_msg_id_already_stored_or_repeated_ends_the_run_at_it(make_conversation, send):
    conv = make_conversation("alice", ["bob"])
    original = send(conv, "alice", "original", client_msg_id="dup")
    send(conv, "bob", "bob's own", client_msg_id="bobs")  # another sender's id is not a repeat
    messages = run(conv, [{"content": "a", "client_msg_id": "bobs"}, {"content": "b", "client_msg_id": "dup"}, {"content": "c"}])
    assert [(m.seq, m.content) for m in messages] == [(3, "a")]
    again, created = one(conv, {"content": "b", "client_msg_id": "dup"})
    assert (again.pk, created, again.content) == (original.pk, False, "original")
    messages = run(conv, [{"content": "c", "client_msg_id": "n"}, {"content": "d"}, {"content": "e", "client_msg_id": "n"}])
    assert [(m.seq, m.content) for m in messages] == [(4, "c"), (5, "d")]
    repeat, created = one(conv, {"content": "e", "client_msg_id": "n"})
    assert (repeat.seq, created, repeat.content) == (4, False, "c")
    assert [r[0] for r in stored(conv)] == [1, 2, 3, 4, 5]


def test_a_run_leaves_a_reply_to_to_message_send(make_conversation, send):
    conv = make_conversation("alice", ["bob"])
    first = send(conv, "bob", "question")
    messages = run(conv, [{"content": "a"}, {"content": "b", "reply_to": first.id}, {"content": "c"}])
    assert [m.content for m in messages] == ["a"]
    reply, created = one(conv, {"content": "b", "reply_to": first.id})
    assert created and reply.reply_to == first.id and reply.seq == 3
    assert run(conv, [{"content": "x", "reply_to": first.id}, {"content": "y"}]) == []


# --- refused runs: nothing written, no seq consumed ----------------------------------------


def _raised(call):
    with pytest.raises(AiimError) as exc:
        call()
    return (type(exc.value), exc.value.code, exc.value.detail, exc.value.errors, exc.value.extra)


def test_a_run_into_a_missing_foreign_or_not_my_conversation_raises_like_message_send(make_conversation, send):
    conv = make_conversation("alice", ["bob"])
    theirs = make_conversation("alice", ["bob"], tenant="acme")
    send(conv, "alice", "one")
    send(theirs, "alice", "theirs", tenant="acme")
    items = [{"content": "a"}, {"content": "b", "client_msg_id": "k"}]
    cases = [
        ({"conversation_id": "missing"}, NotFound),
        ({"conversation_id": theirs.id}, NotFound),
        ({"sender": "carol"}, Forbidden),
        ({"tenant": "acme"}, NotFound),  # my conversation's id seen from another tenant
    ]
    before = sorted(Message.objects.values_list("pk", flat=True))
    counters = (counter(conv.id), counter(theirs.id))
    answers = []
    for kw, error in cases:
        call = {"tenant": "default", "sender": "alice", "conversation_id": conv.id, **kw}
        by_run = _raised(lambda call=call: services.message_send_run(**call, items=[SendInput(**i) for i in items]))
        alone = _raised(lambda call=call: services.message_send(**call, **items[0]))
        assert by_run == alone and by_run[0] is error, kw
        answers.append(by_run)
    assert answers[0] == answers[1] == answers[3]  # another tenant's conversation is a missing one
    assert sorted(Message.objects.values_list("pk", flat=True)) == before
    assert (counter(conv.id), counter(theirs.id)) == counters
    assert send(conv, "alice", "two").seq == 2
    assert send(theirs, "alice", "two", tenant="acme").seq == 2


def test_a_run_of_invalid_items_writes_nothing_and_consumes_no_seq(make_conversation, send, django_assert_num_queries):
    conv = make_conversation("alice", ["bob"])
    send(conv, "alice", "one")
    with django_assert_num_queries(2) as queries:  # its SAVEPOINT and RELEASE: no lock, no read
        assert run(conv, [{"content": ""}, {"content": "b"}]) == []
    assert all("SAVEPOINT" in q["sql"] for q in queries.captured_queries)
    assert run(conv, [{"content": "a", "client_msg_id": 7}]) == []
    assert send(conv, "alice", "two").seq == 2
    if settings.REDIS_URL:
        assert counter(conv.id) == 2


# --- events --------------------------------------------------------------------------------


def test_one_message_created_per_message_after_commit_in_seq_order(make_conversation, send, monkeypatch, django_capture_on_commit_callbacks):
    conv = make_conversation("alice", ["bob"])
    send(conv, "bob", "first")
    published = []
    monkeypatch.setattr(events, "publish_all_now", lambda batch: published.append(list(batch)))
    monkeypatch.setattr(events, "publish_now", lambda groups, message: published.append([(groups, message)]))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        messages = run(conv, [{"content": f"m{i}", "client_msg_id": f"k{i}"} for i in range(7)])
        assert published == []  # nothing before commit
    assert len(callbacks) == 1
    callbacks[0]()
    (batch,) = published
    assert [(groups, e["event"], e["seq"], e["message_id"]) for groups, e in batch] == [
        ([events.conversation_group("default", conv.id)], "message.created", m.seq, m.id) for m in messages
    ]
    assert [m.seq for m in messages] == list(range(2, 9))
    for message, (_, event) in zip(messages, batch):
        frame = orjson.loads(event["frame"])
        assert (frame["type"], frame["channel"], frame["data"]["event"]) == ("event", f"im:conv:{conv.id}", "message.created")
        assert frame["data"]["message"]["seq"] == message.seq and frame["data"]["message"]["message_id"] == message.id
        assert frame["data"]["message"]["content"] == message.content
    # The same event a one-at-a-time send publishes, but for the seq and ids.
    published.clear()
    with django_capture_on_commit_callbacks(execute=True):
        send(conv, "alice", "m7", client_msg_id="k7")
    (alone_batch,) = published
    strip = lambda e: {k: v for k, v in e.items() if k not in ("frame", "seq", "message_id", "committed_at")}
    assert strip(alone_batch[0][1]) == strip(batch[0][1])
    # A rolled-back run registers nothing.
    published.clear()
    with django_capture_on_commit_callbacks(execute=True) as callbacks, pytest.raises(RuntimeError), transaction.atomic():
        run(conv, [{"content": "no"}, {"content": "pe"}])
        raise RuntimeError
    assert callbacks == [] and published == []
    assert [r[3] for r in stored(conv)] == ["first", *[f"m{i}" for i in range(7)], "m7"]


@pytest.mark.django_db(transaction=True)
async def test_a_subscriber_gets_each_message_of_a_run_once_in_seq_order_and_none_of_a_rollback(make_conversation):
    conv = await database_sync_to_async(make_conversation)("alice", ["bob"])
    listener = await LayerListener.join(events.conversation_group("default", conv.id))

    async def next_event(timeout=5.0):
        message = await listener.next(timeout)
        return message["event"], message["seq"], orjson.loads(message["frame"])["data"]["message"]["content"]

    def rolled_back():
        with pytest.raises(RuntimeError), transaction.atomic():
            run(conv, [{"content": "no"}, {"content": "pe"}])
            raise RuntimeError

    await database_sync_to_async(rolled_back)()
    first = await database_sync_to_async(run)(conv, [{"content": f"a{i}"} for i in range(5)])
    await database_sync_to_async(one)(conv, {"content": "b"})
    second = await database_sync_to_async(run)(conv, [{"content": f"c{i}"} for i in range(4)])
    burnt = 2 if settings.REDIS_URL else 0  # the Redis counter's range of the rolled-back run
    assert [m.seq for m in first + second] == [s + burnt for s in (1, 2, 3, 4, 5, 7, 8, 9, 10)]
    got = [await next_event() for _ in range(10)]
    contents = [*(f"a{i}" for i in range(5)), "b", *(f"c{i}" for i in range(4))]
    assert got == [("message.created", s + burnt, c) for s, c in enumerate(contents, 1)]
    with pytest.raises(asyncio.TimeoutError):
        await next_event(timeout=0.3)


# --- the Redis counter -----------------------------------------------------------------------


@pytest.mark.redis
def test_a_run_allocates_its_range_once_from_a_floored_counter(make_conversation, send, monkeypatch):
    from aiim_project.core.redis import sync_client

    conv = make_conversation("alice", ["bob"])
    for i in range(3):
        send(conv, "alice", f"m{i}")
    sync_client().delete(seq.seq_key(conv.id))  # Redis restarted empty
    allocator = services.get_allocator()
    calls = []
    real = allocator.allocate

    def counting(**kw):
        calls.append(kw)
        return real(**kw)

    monkeypatch.setattr(allocator, "allocate", counting)
    messages = run(conv, [{"content": f"r{i}"} for i in range(10)])
    assert calls == [{"conversation_id": conv.id, "floor": 3, "count": 10}]
    assert [m.seq for m in messages] == list(range(4, 14))
    assert counter(conv.id) == 13
    sync_client().set(seq.seq_key(conv.id), 2)  # set back below the committed maximum
    messages = run(conv, [{"content": "s0"}, {"content": "s1"}])
    assert [m.seq for m in messages] == [14, 15]
    assert counter(conv.id) == 15


@pytest.mark.redis
def test_a_counter_behind_the_database_makes_the_run_a_conflict_and_the_next_send_raises_it(make_conversation, send):
    """A row the counter does not know about (Redis restored from an old snapshot while
    last_seq lagged): the run's range collides, the run raises Conflict with nothing written,
    and the one-at-a-time send then raises the counter above it and succeeds."""
    conv = make_conversation("alice", ["bob"])
    send(conv, "alice", "one")
    Message.objects.create(tenant="default", conversation=conv, seq=3, sender_id="bob", content="planted")
    before = stored(conv)
    with pytest.raises(Conflict):
        run(conv, [{"content": "a", "client_msg_id": "a"}, {"content": "b"}, {"content": "c"}])
    assert stored(conv) == before
    assert Conversation.objects.get(pk=conv.pk).last_seq == 1
    message, created = one(conv, {"content": "a", "client_msg_id": "a"})
    assert created and message.seq > 3
    assert counter(conv.id) == message.seq
    assert [m.seq for m in run(conv, [{"content": "b"}, {"content": "c"}])] == [message.seq + 1, message.seq + 2]


# --- concurrency -------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_concurrent_runs_into_one_conversation_get_unique_gap_free_seqs(make_conversation, in_threads):
    conv = make_conversation("u0", ["u1", "u2", "u3"])
    acked = []
    lock = threading.Lock()
    start = threading.Barrier(4)

    def writer(n):
        start.wait()
        rng = random.Random(n)
        for r in range(8):
            items = [{"content": f"{n}.{r}.{j}", "client_msg_id": f"{n}.{r}.{j}"} for j in range(rng.randint(1, 6))]
            while items:  # as the gateway does: what a run leaves goes one at a time
                messages = run(conv, items, sender=f"u{n}") if len(items) > 1 else []
                got = [m.seq for m in messages]
                items = items[len(messages):]
                if items:
                    got.append(one(conv, items.pop(0), sender=f"u{n}")[0].seq)
                with lock:
                    acked.extend(got)

    in_threads(writer, 4)
    rows = list(Message.objects.filter(conversation=conv).order_by("seq").values_list("seq", "sender_id", "content"))
    assert sorted(acked) == [s for s, _, _ in rows] == list(range(1, len(rows) + 1))
    assert Conversation.objects.get(pk=conv.pk).last_seq == len(rows)
    for n in range(4):  # each writer's messages in the order it sent them
        mine = [c for _, s, c in rows if s == f"u{n}"]
        assert mine == sorted(mine, key=lambda c: tuple(int(x) for x in c.split(".")[1:]))
    if settings.REDIS_URL:
        assert counter(conv.id) == len(rows)
