"""send_msg frames queued on one connection are stored as runs (FrameSpec.batch): through the
real gateway with a queue like Daphne's, then end to end with a real Daphne process. Every
frame must get exactly the answer it gets when sent alone, in order, acks before the events
they cause, and every subscriber every message once, in seq order."""

from __future__ import annotations

import asyncio
import json
import time
from types import SimpleNamespace

import pytest
from channels.db import database_sync_to_async

from aiim_project.core import events, ratelimit
from aiim_project.core.auth import mint_token
from aiim_project.core.metrics import RATE_LIMITED
from aiim_project.gateway import runs as run_taking
from messaging import services
from messaging.models import Message
from tests.support.communicator import ask, connect, connect_queued, pipeline, subscribe
from tests.support.layer import LayerListener
from tests.support.websocket import ws_recv

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def conversation(make_conversation):
    return database_sync_to_async(make_conversation)


@pytest.fixture
def runs(monkeypatch):
    """(items handed to message_send_run, messages it stored) for every run: proof that the
    gateway batched, so these tests fail if send_msg loses its FrameSpec.batch."""
    calls: list[tuple[int, int]] = []
    real = services.message_send_run

    def spy(**kw):
        messages = real(**kw)
        calls.append((len(kw["items"]), len(messages)))
        return messages

    monkeypatch.setattr(services, "message_send_run", spy)
    return calls


def send_frame(conv_id, content="hi", **kw):
    return {"type": "send_msg", "conversation_id": conv_id, "content": content, **kw}


def answer(frame):
    """What a client can compare between two conversations: not the message ids."""
    return tuple(frame.get(k) for k in ("type", "event", "code", "message", "req_id", "seq", "client_msg_id", "errors"))


async def rows(conv_id):
    return [
        (m.seq, m.sender_id, m.type, m.content, m.client_msg_id, m.metadata)
        async for m in Message.objects.filter(conversation_id=conv_id).order_by("seq")
    ]


async def listen(conv_id, tenant="default"):
    return (await LayerListener.join(events.conversation_group(tenant, conv_id))).next


async def created_events(comm, n, timeout=10):
    got = []
    while len(got) < n:
        frame = await comm.receive_json_from(timeout=timeout)
        assert frame["type"] == "event", frame
        got.append(frame["data"])
    return got


async def test_thirty_queued_sends_get_thirty_acks_in_order_and_one_event_each(conversation, runs):
    conv = await conversation("alice", ["bob"])
    alice, bob = await connect_queued("alice"), await connect("bob")
    await subscribe(bob, conv.id)
    published = await listen(conv.id)
    frames = [send_frame(conv.id, f"m{i}", req_id=f"r{i}", **({"client_msg_id": f"k{i}"} if i % 2 else {})) for i in range(30)]
    replies = await pipeline(alice, frames)
    assert [(r["type"], r["event"], r["req_id"], r["seq"], r["client_msg_id"]) for r in replies] == [
        ("ack", "message.sent", f"r{i}", i + 1, f"k{i}" if i % 2 else None) for i in range(30)
    ]
    assert len({r["message_id"] for r in replies}) == 30
    stored = await rows(conv.id)
    assert [(s, c, k) for s, _, _, c, k, _ in stored] == [(i + 1, f"m{i}", f"k{i}" if i % 2 else None) for i in range(30)]
    assert runs == [(30, 30)]  # one run, one transaction
    # One commit: every event of the run was handed over at once, in seq order.
    hints = [await published() for _ in range(30)]
    assert [(h["event"], h["seq"]) for h in hints] == [("message.created", i) for i in range(1, 31)]
    assert len({h["committed_at"] for h in hints}) == 1
    got = await created_events(bob, 30)
    assert [(d["event"], d["message"]["seq"], d["message"]["content"], d["message"]["message_id"]) for d in got] == [
        ("message.created", r["seq"], f"m{i}", r["message_id"]) for i, r in enumerate(replies)
    ]
    await bob.receive_nothing(timeout=0.3)  # exactly once
    for comm in (alice, bob):
        await comm.disconnect()


async def _split_window(comm, conv_id):
    """m0 and m1 queued, m2 and m3 arriving while the run of the first two is being taken:
    a client's window of 4 split over two runs."""

    async def later():
        await asyncio.sleep(0.05)
        for i in (2, 3):
            await comm.send_json_to(send_frame(conv_id, f"m{i}", req_id=f"r{i}"))

    injector = asyncio.create_task(later())
    replies = await pipeline(comm, [send_frame(conv_id, f"m{i}", req_id=f"r{i}") for i in (0, 1)])
    replies += [await comm.receive_json_from(timeout=10) for _ in range(2)]
    await injector
    return [(r["type"], r["req_id"]) for r in replies]


async def test_a_split_window_waits_for_its_other_half_after_longer_runs(conversation, runs, monkeypatch):
    monkeypatch.setattr(run_taking, "RUN_LINGER", 2.0)  # far longer than the 50 ms the second half takes
    conv = await conversation("alice", ["bob"])
    alice = await connect_queued("alice")
    await pipeline(alice, [send_frame(conv.id, f"w{i}") for i in range(4)])
    assert runs == [(4, 4)]
    assert await _split_window(alice, conv.id) == [("ack", f"r{i}") for i in range(4)]
    assert runs == [(4, 4), (4, 4)]  # the halves were stored as one run
    assert [c for _, _, _, c, _, _ in await rows(conv.id)][4:] == ["m0", "m1", "m2", "m3"]
    await alice.disconnect()


async def test_a_run_no_longer_than_the_clients_recent_runs_does_not_wait(conversation, runs, monkeypatch):
    monkeypatch.setattr(run_taking, "RUN_LINGER", 2.0)
    conv = await conversation("alice", ["bob"])
    alice = await connect_queued("alice")
    started = time.monotonic()
    assert await _split_window(alice, conv.id) == [("ack", f"r{i}") for i in range(4)]
    assert runs == [(2, 2), (2, 2)]
    assert time.monotonic() - started < 1.5  # nothing waited for RUN_LINGER
    await alice.disconnect()


async def test_a_split_window_whose_other_half_never_comes_is_answered_after_the_wait(conversation, runs, monkeypatch):
    monkeypatch.setattr(run_taking, "RUN_LINGER", 0.2)
    conv = await conversation("alice", ["bob"])
    alice = await connect_queued("alice")
    await pipeline(alice, [send_frame(conv.id, f"w{i}") for i in range(4)])
    replies = await pipeline(alice, [send_frame(conv.id, f"m{i}", req_id=f"r{i}") for i in range(2)])
    assert [(r["type"], r["req_id"], r["seq"]) for r in replies] == [("ack", "r0", 5), ("ack", "r1", 6)]
    assert runs == [(4, 4), (2, 2)]
    await alice.disconnect()


async def test_a_run_that_fails_is_sent_again_one_at_a_time_without_a_gap_in_seq(conversation, monkeypatch):
    """The database fails the run's transaction after its seqs were allocated; the gateway
    answers each frame through the one-at-a-time path. Every frame is acked, and the seqs
    follow the last one before without a gap: no seq is missing that no sender got an
    error for (docs/protocol.md section 5)."""
    from django.db import OperationalError

    conv = await conversation("alice", ["bob"])
    alice = await connect_queued("alice")
    assert (await ask(alice, send_frame(conv.id, "before")))["seq"] == 1
    store, failed = services._store_messages, []

    def fail_the_run(conversation_id, messages, *rest):
        if len(messages) > 1 and not failed:
            failed.append(len(messages))
            raise OperationalError("the database went away")
        return store(conversation_id, messages, *rest)

    monkeypatch.setattr(services, "_store_messages", fail_the_run)
    replies = await pipeline(alice, [send_frame(conv.id, f"m{i}", req_id=f"r{i}") for i in range(4)])
    assert failed, "the frames were not sent as a run"
    assert [(r["type"], r["req_id"], r["seq"]) for r in replies] == [("ack", f"r{i}", i + 2) for i in range(4)]
    assert [(s, c) for s, _, _, c, _, _ in await rows(conv.id)] == [(1, "before"), *((i + 2, f"m{i}") for i in range(4))]
    await alice.disconnect()


async def test_a_mixed_run_gets_exactly_the_answers_of_the_same_frames_sent_one_at_a_time(conversation, settings, runs):
    settings.MAX_MESSAGE_BYTES = 200
    theirs = await conversation("dave", ["alice"], tenant="acme")

    def frames(conv_id, other_id):
        f = lambda content="x", **kw: send_frame(conv_id, content, **kw)
        return [
            f("a", req_id="1"),
            f("b", req_id="2", client_msg_id="k1"),
            {"type": "send_msg", "conversation_id": conv_id, "req_id": "3"},  # no content
            f("c", req_id="4"),
            f("d", req_id="5", msg_type="sticker"),  # bad type
            f("e", req_id="6", msg_type="ai", metadata={"m": 1}),
            f("f", req_id="7", tenant_id="acme"),  # another tenant's id
            f("g", req_id="8"),
            f("h", req_id="9", client_msg_id="k1"),  # repeated within the run
            f("i", req_id="10", client_msg_id="stored"),  # already stored
            f("j", req_id="11", metadata=["not", "an", "object"]),
            f("y" * 300, req_id="12"),  # too large
            {"type": "ping", "req_id": "13"},
            f("k", req_id="14"),
            send_frame(theirs.id, "t", req_id="15"),  # a conversation of another tenant
            send_frame("missing", "t", req_id="16"),
            f("l", req_id="17"),
            f("m", req_id="18", reply_to="no-such-message"),
            send_frame(other_id, "o1", req_id="19"),  # another conversation of the sender
            send_frame(other_id, "o2", req_id="20"),
            f("n", req_id="21", client_msg_id=""),
            f("o", req_id="22"),
            f("p", req_id="23"),
            {"type": "send_msg", "conversation_id": conv_id, "content": 5, "req_id": "24"},
        ]

    async def setup(user):
        conv, other = await conversation(user, ["bob"]), await conversation(user, ["carol"])
        await database_sync_to_async(services.message_send)(
            tenant="default", sender=user, conversation_id=conv.id, content="before", client_msg_id="stored"
        )
        return conv, other

    (qconv, qother), (pconv, pother) = await setup("alice"), await setup("erin")
    queued, plain = await connect_queued("alice"), await connect("erin")
    replies = await pipeline(queued, frames(qconv.id, qother.id))
    expected = [await ask(plain, f) for f in frames(pconv.id, pother.id)]
    assert [r.get("req_id") for r in replies] == [str(i) for i in range(1, 25)]
    assert [answer(r) for r in replies] == [answer(r) for r in expected]
    assert [(r["type"], r.get("code") or r.get("seq")) for r in replies] == [
        ("ack", 2), ("ack", 3), ("error", "invalid"), ("ack", 4), ("error", "invalid"), ("ack", 5), ("error", "tenant_mismatch"),
        ("ack", 6), ("ack", 3), ("ack", 1), ("error", "invalid"), ("error", "too_large"), ("pong", None), ("ack", 7),
        ("error", "not_found"), ("error", "not_found"), ("ack", 8), ("error", "invalid"), ("ack", 1), ("ack", 2),
        ("error", "invalid"), ("ack", 9), ("ack", 10), ("ack", 11),
    ]
    # Another tenant's conversation is a missing one: the same error frame but for the ids.
    same = lambda r: {k: v for k, v in r.items() if k not in ("conversation_id", "req_id")}
    assert same(replies[14]) == same(replies[15])
    assert replies[8]["message_id"] == replies[1]["message_id"]  # the repeat answers with the original
    strip = lambda rs: [r[:1] + r[2:] for r in rs]
    assert strip(await rows(qconv.id)) == strip(await rows(pconv.id))
    assert strip(await rows(qother.id)) == strip(await rows(pother.id))
    assert await rows(theirs.id) == []
    assert any(stored > 1 for _, stored in runs), runs  # frames were batched
    for comm in (queued, plain):
        await comm.disconnect()


def _window_count(user):
    """How many times this user was counted in the current (frozen) rate-limit window."""
    from django.conf import settings

    window = int(ratelimit.time.time())
    if not settings.REDIS_URL:
        return ratelimit._local.get(("default", user, window), 0)
    from aiim_project.core.redis import sync_client

    return int(sync_client().get(ratelimit._key("default", user, window)) or 0)


def _rate_limited_metric():
    return RATE_LIMITED.labels(via="ws")._value.get()


async def test_queued_sends_count_against_the_rate_limit_exactly_as_one_at_a_time(conversation, settings, monkeypatch, runs):
    settings.RATE_LIMIT_PER_SEC = 4
    # One fixed window for the whole test, so a second boundary cannot reset the count.
    window = float(int(time.time())) + 0.5
    monkeypatch.setattr(ratelimit, "time", SimpleNamespace(time=lambda: window))

    def frames(conv_id):
        return [
            send_frame(conv_id, "a", req_id="1"),
            send_frame(conv_id, "b", req_id="2"),
            {"type": "ping", "req_id": "3"},  # not counted
            send_frame(conv_id, "c", req_id="4"),
            send_frame(conv_id, "", req_id="5"),  # counted, then invalid
            send_frame(conv_id, "d", req_id="6"),  # over the limit
            send_frame(conv_id, "e", req_id="7"),  # over the limit
            {"type": "ping", "req_id": "8"},
            send_frame(conv_id, "f", req_id="9"),  # over the limit
        ]

    qconv, pconv = await conversation("rl-q", ["bob"]), await conversation("rl-p", ["bob"])
    queued, plain = await connect_queued("rl-q"), await connect("rl-p")
    metric = _rate_limited_metric()
    replies = await pipeline(queued, frames(qconv.id))
    queued_refusals = _rate_limited_metric() - metric
    metric = _rate_limited_metric()
    expected = [await ask(plain, f) for f in frames(pconv.id)]
    plain_refusals = _rate_limited_metric() - metric
    assert [answer(r) for r in replies] == [answer(r) for r in expected]
    assert [r.get("code") for r in replies] == [None, None, None, None, "invalid", "rate_limited", "rate_limited", None, "rate_limited"]
    assert [c for _, _, _, c, _, _ in await rows(qconv.id)] == ["a", "b", "c"]
    # Counted exactly as one at a time: the window's count and the refusals measured.
    assert _window_count("rl-q") == _window_count("rl-p") == 7
    assert queued_refusals == plain_refusals == 3
    assert runs and runs[0] == (2, 2)  # "a" and "b" were one run; the ping ended it
    for comm in (queued, plain):
        await comm.disconnect()


async def test_the_ack_reaches_the_sender_before_any_event_it_caused(conversation, runs):
    conv = await conversation("alice", ["bob"])
    alice = await connect_queued("alice")
    await subscribe(alice, conv.id)
    frames = [send_frame(conv.id, f"m{i}", req_id=str(i)) for i in range(20)]
    for frame in frames:
        await alice.send_json_to(frame)
    got = [await alice.receive_json_from(timeout=10) for _ in range(40)]
    acks = {f["seq"]: k for k, f in enumerate(got) if f["type"] == "ack"}
    created = {f["data"]["message"]["seq"]: k for k, f in enumerate(got) if f["type"] == "event"}
    assert sorted(acks) == sorted(created) == list(range(1, 21))
    assert all(acks[s] < created[s] for s in acks), [(f["type"], f.get("seq") or f["data"]["message"]["seq"]) for f in got]
    assert [f["req_id"] for f in got if f["type"] == "ack"] == [str(i) for i in range(20)]
    assert [f["data"]["message"]["seq"] for f in got if f["type"] == "event"] == list(range(1, 21))
    assert runs and max(stored for _, stored in runs) > 1
    await alice.receive_nothing(timeout=0.3)
    await alice.disconnect()


# --- end to end: a real Daphne process --------------------------------------------------------


async def recv(ws):
    return await ws_recv(ws, 30)


@pytest.mark.e2e
async def test_two_hundred_pipelined_sends_under_daphne_are_answered_in_order_and_delivered_once(conversation, daphne):
    import websockets

    conv = await conversation("alice", ["bob"])
    (server,) = await asyncio.to_thread(daphne, 1)

    def ws(user):
        return websockets.connect(f"{server.ws_url}?token={mint_token(user_id=user)}")

    frames = [send_frame(conv.id, f"m{i}", req_id=str(i), client_msg_id=f"k{i}") for i in range(200)]
    frames.insert(100, {"type": "send_msg", "conversation_id": conv.id, "req_id": "bad"})  # no content
    async with ws("bob") as bob, ws("alice") as alice:
        await bob.send(json.dumps({"type": "subscribe", "conversation_id": conv.id}))
        assert (await recv(bob))["type"] == "subscribed"

        async def bob_reads(n):
            seen = []
            while len(seen) < n:
                frame = await recv(bob)
                assert frame["type"] == "event" and frame["data"]["event"] == "message.created", frame
                seen.append(frame["data"]["message"])
            return seen

        reading = asyncio.create_task(bob_reads(200))
        for frame in frames:
            await alice.send(json.dumps(frame))
        replies = [await recv(alice) for _ in frames]
        seen = await reading
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(bob.recv(), 0.5)  # exactly once: nothing more
    assert [r.get("req_id") for r in replies] == [f["req_id"] for f in frames]
    bad = replies.pop(100)
    assert (bad["type"], bad["code"], list(bad["errors"])) == ("error", "invalid", ["content"])
    assert [(r["type"], r["seq"], r["client_msg_id"]) for r in replies] == [("ack", i + 1, f"k{i}") for i in range(200)]
    assert [(m["seq"], m["message_id"], m["content"]) for m in seen] == [(r["seq"], r["message_id"], f"m{i}") for i, r in enumerate(replies)]
    assert [s for s, *_ in await rows(conv.id)] == list(range(1, 201))
