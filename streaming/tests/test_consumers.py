"""The stream frames: the handlers called directly, then through the real gateway, channel
layer and (end-to-end) real Daphne processes."""

import asyncio
import json
import random
import time
import urllib.request
from types import SimpleNamespace

import pytest
from channels.db import database_sync_to_async

from aiim_project.core import ratelimit
from aiim_project.core.auth import mint_token
from aiim_project.core.errors import Conflict, Forbidden, Invalid, NotFound, TenantMismatch
from messaging.models import Message
from streaming import frames
from tests.support.communicator import FakeConnection, ask, connect, connect_queued, pipeline, subscribe
from tests.support.websocket import ws_recv

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def conversation(make_conversation):
    return database_sync_to_async(make_conversation)


def chunk_frame(conv_id, chunk, cmid="s1", **kw):
    return {"type": "stream_chunk", "conversation_id": conv_id, "client_msg_id": cmid, "chunk": chunk, **kw}


async def stored(cmid="s1"):
    return await Message.objects.aget(client_msg_id=cmid)


# --- handlers, called directly ---------------------------------------------------------


async def test_handlers_ack_chunks_and_abort(conversation):
    conv = await conversation()
    alice = FakeConnection(user_id="alice")
    ack = await frames.stream_chunk(alice, chunk_frame(conv.id, "a"))
    message = await stored()
    assert ack == {
        "type": "ack",
        "event": "stream.sent",
        "conversation_id": conv.id,
        "message_id": message.id,
        "seq": 1,
        "client_msg_id": "s1",
        "chunk_index": 0,
        "stream_end": False,
    }
    ack = await frames.stream_chunk(alice, chunk_frame(conv.id, "b", stream_end=True))
    assert (ack["chunk_index"], ack["stream_end"], ack["seq"]) == (1, True, 1)
    repeat = await frames.stream_chunk(alice, chunk_frame(conv.id, "a", chunk_index=0))
    assert (repeat["chunk_index"], repeat["stream_end"]) == (0, False)
    await frames.stream_chunk(alice, chunk_frame(conv.id, "x", cmid="s2"))
    ack = await frames.stream_abort(alice, {"type": "stream_abort", "conversation_id": conv.id, "client_msg_id": "s2"})
    s2 = await stored("s2")
    assert ack == {
        "type": "ack",
        "event": "stream.aborted",
        "conversation_id": conv.id,
        "message_id": s2.id,
        "seq": 2,
        "client_msg_id": "s2",
    }
    assert s2.stream_state == "aborted"
    assert alice.rate_limit_calls == 2  # the starts of s1 and s2; later chunks and the retry do not count


async def test_handlers_raise_the_domain_errors(conversation):
    conv = await conversation(others=("bob",))
    theirs = await conversation(tenant="acme")
    alice = FakeConnection(user_id="alice")
    await frames.stream_chunk(alice, chunk_frame(conv.id, "a"))
    with pytest.raises(Conflict) as exc:
        await frames.stream_chunk(alice, chunk_frame(conv.id, "c", chunk_index=5))
    assert exc.value.extra["expected_chunk_index"] == 1
    with pytest.raises(Forbidden):
        await frames.stream_chunk(FakeConnection(user_id="bob"), chunk_frame(conv.id, "x"))
    with pytest.raises(NotFound):
        await frames.stream_chunk(alice, chunk_frame(theirs.id, "x"))
    with pytest.raises(NotFound):
        await frames.stream_abort(alice, {"conversation_id": theirs.id, "client_msg_id": "s1"})
    with pytest.raises(Invalid):
        await frames.stream_chunk(alice, chunk_frame(conv.id, "x", chunk_index=-1))
    with pytest.raises(TenantMismatch):
        await frames.stream_chunk(alice, chunk_frame(conv.id, "x", tenant_id="acme"))
    assert (await stored()).content == "a"


# --- through the gateway -----------------------------------------------------------------


async def events_until_updated(comm):
    got = []
    while True:
        frame = await comm.receive_json_from(timeout=10)
        assert frame["type"] == "event", frame
        got.append(frame["data"])
        if frame["data"]["event"] == "message.updated":
            return got


async def test_only_a_streams_first_chunk_counts_against_the_rate_limit(conversation, settings, monkeypatch):
    settings.RATE_LIMIT_PER_SEC = 2
    # One fixed window for the whole test, so a second boundary cannot reset the count.
    window = float(int(time.time())) + 0.5
    monkeypatch.setattr(ratelimit, "time", SimpleNamespace(time=lambda: window))
    conv = await conversation("rl-ai", ["bob"])
    comm = await connect("rl-ai")
    try:
        assert (await ask(comm, chunk_frame(conv.id, "a", cmid="s1")))["type"] == "ack"  # counts: 1
        for i in range(1, 8):  # chunks of a started stream, with and without an index
            ack = await ask(comm, chunk_frame(conv.id, "b", cmid="s1", **({"chunk_index": i} if i % 2 else {})))
            assert (ack["type"], ack["chunk_index"]) == ("ack", i), ack
        assert (await ask(comm, chunk_frame(conv.id, "a", cmid="s2", chunk_index=0)))["type"] == "ack"  # counts: 2
        refused = await ask(comm, chunk_frame(conv.id, "a", cmid="s3", req_id="r3"))
        assert (refused["type"], refused["code"], refused["req_id"]) == ("error", "rate_limited", "r3")
        assert not await Message.objects.filter(client_msg_id="s3").aexists()
        # The same counter as every other write, and the open streams still go on.
        assert (await ask(comm, {"type": "send_msg", "conversation_id": conv.id, "content": "x"}))["code"] == "rate_limited"
        assert (await ask(comm, chunk_frame(conv.id, "c", cmid="s1", stream_end=True)))["stream_end"] is True
        assert (await ask(comm, chunk_frame(conv.id, "a", cmid="s2", chunk_index=0)))["type"] == "ack"  # a retry
    finally:
        await comm.disconnect()
    assert (await stored("s1")).content == "ab" + "b" * 6 + "c"


def apply_stream_events(data_list, text="", next_chunk=0):
    """What a client does: take the snapshot, then append each chunk event in order."""
    for data in data_list:
        if data["event"] == "message.created" and data["message"]["stream"]:
            text, next_chunk = data["message"]["content"], data["message"]["stream"]["chunk_count"]
        elif data["event"] == "message.stream_chunk":
            assert data["chunk_index"] == next_chunk, (data, next_chunk)
            text += data["delta"]
            next_chunk = data["last_chunk_index"] + 1
    return text, next_chunk


async def test_a_subscriber_sees_created_then_every_chunk_then_updated(conversation):
    conv = await conversation(others=("bob",))
    alice, bob = await connect("alice"), await connect("bob")
    await subscribe(bob, conv.id)
    ack = await ask(alice, chunk_frame(conv.id, "Hel", req_id="r1"))
    assert (ack["type"], ack["event"], ack["req_id"], ack["chunk_index"], ack["seq"]) == ("ack", "stream.sent", "r1", 0, 1)
    assert (await ask(alice, chunk_frame(conv.id, "lo")))["chunk_index"] == 1
    ack = await ask(alice, chunk_frame(conv.id, "!", stream_end=True))
    assert (ack["chunk_index"], ack["stream_end"]) == (2, True)
    got = await events_until_updated(bob)
    # The created message is the live event (content "", chunk_count 0) or, if the stream
    # began while the subscription was still reading its tail, the stored row with chunk 0
    # already in it; either way the chunks continue exactly from its chunk_count.
    assert got[0]["event"] == "message.created"
    skipped = got[0]["message"]["stream"]["chunk_count"]
    assert [d["chunk"] for d in got if d["event"] == "message.stream_chunk"] == ["Hel", "lo", "!"][skipped:]
    assert apply_stream_events(got) == ("Hello!", 3)
    assert got[-1]["message"]["stream"] == {"stream_id": "s1", "state": "completed", "chunk_count": 3}
    assert got[-1]["message"]["content"] == "Hello!"
    for comm in (alice, bob):
        await comm.disconnect()


async def test_chunk_events_carry_the_original_message_object(conversation):
    """A client of the original AIIM reads `data.message` on a chunk event (docs/migrating.md)."""
    conv = await conversation(others=("bob",))
    alice, bob = await connect("alice"), await connect("bob")
    await subscribe(bob, conv.id)
    await ask(alice, chunk_frame(conv.id, "Hel"))
    await ask(alice, chunk_frame(conv.id, "lo", stream_end=True))
    got = await events_until_updated(bob)
    message = await stored()
    chunks = [d for d in got if d["event"] == "message.stream_chunk"]
    assert chunks
    for data in chunks:
        assert data["message"] == {
            "message_id": message.id,
            "sender_id": "alice",
            "type": "stream_chunk",
            "content": {"chunk": data["delta"]},
            "created_at": message.created_at.isoformat().replace("+00:00", "Z"),
            "seq": message.seq,
            "stream_end": data["stream_end"],
        }
    assert chunks[-1]["message"]["stream_end"] is True
    for comm in (alice, bob):
        await comm.disconnect()


async def test_an_empty_chunk_ends_a_stream_and_a_missing_chunk_is_invalid(conversation):
    conv = await conversation()
    alice = await connect("alice")
    await ask(alice, chunk_frame(conv.id, "all the text"))
    missing = {k: v for k, v in chunk_frame(conv.id, "").items() if k != "chunk"}
    error = await ask(alice, missing)
    assert (error["type"], error["code"], list(error["errors"])) == ("error", "invalid", ["chunk"])
    ack = await ask(alice, chunk_frame(conv.id, "", stream_end=True))
    assert (ack["type"], ack["chunk_index"], ack["stream_end"]) == ("ack", 1, True)
    message = await stored()
    assert (message.content, message.stream_state, message.stream_chunk_count) == ("all the text", "completed", 2)
    await alice.disconnect()


async def test_abort_frame_is_acked_and_subscribers_get_the_final_message(conversation):
    conv = await conversation(others=("bob",))
    alice, bob = await connect("alice"), await connect("bob")
    await subscribe(bob, conv.id)
    await ask(alice, chunk_frame(conv.id, "kept"))
    ack = await ask(alice, {"type": "stream_abort", "conversation_id": conv.id, "client_msg_id": "s1", "req_id": "x"})
    assert (ack["event"], ack["req_id"], ack["seq"]) == ("stream.aborted", "x", 1)
    got = await events_until_updated(bob)
    assert got[-1]["message"]["stream"]["state"] == "aborted"
    assert got[-1]["message"]["content"] == "kept"
    error = await ask(alice, {"type": "stream_abort", "conversation_id": conv.id, "client_msg_id": "s1"})
    assert (error["type"], error["code"]) == ("error", "conflict")
    for comm in (alice, bob):
        await comm.disconnect()


@pytest.mark.parametrize(
    "frame_fields, code",
    [
        ({"client_msg_id": None}, "invalid"),
        ({"chunk": 12}, "invalid"),
        ({"chunk_index": -2}, "invalid"),
        ({"conversation_id": "nul\x00"}, "invalid"),
        ({"client_msg_id": "nul\x00"}, "invalid"),
        ({"chunk": "nul\x00"}, "invalid"),
        ({"chunk_index": 7}, "conflict"),
        ({"chunk": "y" * 200}, "too_large"),
    ],
)
async def test_bad_frames_get_error_frames_and_the_stream_is_unharmed(conversation, settings, frame_fields, code):
    settings.MAX_MESSAGE_BYTES = 100
    conv = await conversation()
    alice = await connect("alice")
    await ask(alice, chunk_frame(conv.id, "ok"))
    frame = {k: v for k, v in {**chunk_frame(conv.id, "x", req_id="r9"), **frame_fields}.items() if v is not None}
    error = await ask(alice, frame)
    assert (error["type"], error["code"], error["req_id"], error["conversation_id"]) == ("error", code, "r9", frame["conversation_id"])
    if code == "conflict":
        assert error["expected_chunk_index"] == 1
    assert (await ask(alice, {"type": "ping"})) == {"type": "pong"}  # still open
    message = await stored()
    assert (message.content, message.stream_chunk_count, message.stream_state) == ("ok", 1, "streaming")
    await alice.disconnect()


async def test_other_writers_get_forbidden_and_other_tenants_not_found(conversation):
    conv = await conversation(others=("bob",))
    theirs = await conversation(tenant="acme")
    alice, bob, mallory = await connect("alice"), await connect("bob"), await connect("mallory")
    await ask(alice, chunk_frame(conv.id, "mine"))
    for comm in (bob, mallory):
        assert (await ask(comm, chunk_frame(conv.id, "x")))["code"] == "forbidden"
        assert (await ask(comm, {"type": "stream_abort", "conversation_id": conv.id, "client_msg_id": "s1"}))["code"] == "forbidden"
    missing = [await ask(alice, chunk_frame(cid, "x", cmid="t")) for cid in (theirs.id, "missing")]
    assert [(e["type"], e["code"], e["message"]) for e in missing] == [("error", "not_found", missing[1]["message"])] * 2
    aborts = [await ask(alice, {"type": "stream_abort", "conversation_id": cid, "client_msg_id": "t"}) for cid in (theirs.id, "missing")]
    assert [(e["code"], e["message"]) for e in aborts] == [("not_found", aborts[1]["message"])] * 2
    assert (await stored()).content == "mine"
    for comm in (alice, bob, mallory):
        await comm.disconnect()


async def test_two_streams_and_a_message_interleaved_over_ws(conversation):
    conv = await conversation(others=("bot",))
    alice, bot, watcher = await connect("alice"), await connect("bot"), await connect("alice")
    await subscribe(watcher, conv.id)
    await ask(bot, chunk_frame(conv.id, "A0", cmid="A"))
    await ask(alice, {"type": "send_msg", "conversation_id": conv.id, "content": "question"})
    await ask(bot, chunk_frame(conv.id, "B0", cmid="B"))
    await ask(bot, chunk_frame(conv.id, "A1", cmid="A"))
    await ask(bot, chunk_frame(conv.id, "B1", cmid="B", stream_end=True))
    await ask(bot, chunk_frame(conv.id, "A2", cmid="A", stream_end=True))
    events, ended = [], 0
    while ended < 2:
        events.append((await watcher.receive_json_from(timeout=5))["data"])
        ended += events[-1]["event"] == "message.updated"
    created = [(d["message"]["seq"], d["message"]["client_msg_id"]) for d in events if d["event"] == "message.created"]
    assert created == [(1, "A"), (2, None), (3, "B")]

    def of(stream_id):
        return [
            d
            for d in events
            if d.get("stream_id") == stream_id or (d["event"] == "message.created" and d["message"]["client_msg_id"] == stream_id)
        ]

    assert apply_stream_events(of("A")) == ("A0A1A2", 3)
    assert apply_stream_events(of("B")) == ("B0B1", 2)
    for comm in (alice, bot, watcher):
        await comm.disconnect()


@pytest.mark.parametrize("coalesce_ms", [0, 20])
async def test_late_joiner_reconstructs_a_500_chunk_stream_from_replay_and_live_chunks(conversation, settings, coalesce_ms):
    """Bob subscribes with since_seq while Alice is streaming, at a random chunk: the replayed
    message (text so far, chunk_count) plus the live chunks is exactly the final text, with
    chunk events one by one or coalesced."""
    settings.STREAM_COALESCE_MS = coalesce_ms
    conv = await conversation(others=("bob",))
    rng = random.Random()
    parts = [rng.choice(["tok", " ", "é", "\n", "好", "x" * rng.randint(1, 4)]) for _ in range(500)]
    join_at = rng.randint(1, 498)
    reached = asyncio.Event()
    alice, bob = await connect("alice"), await connect("bob")

    async def stream():
        for i, part in enumerate(parts):
            ack = await ask(alice, chunk_frame(conv.id, part, stream_end=i == len(parts) - 1))
            assert ack["chunk_index"] == i, ack
            if i == join_at:
                reached.set()

    writer = asyncio.create_task(stream())
    await reached.wait()
    await subscribe(bob, conv.id, since_seq=0)  # Alice keeps streaming meanwhile
    got = await events_until_updated(bob)
    await writer
    assert got[0]["event"] == "message.created"
    assert got[0]["message"]["stream"]["chunk_count"] > join_at
    # No chunk missed or doubled at any seam, with single or coalesced events (a coalesced
    # event straddling the snapshot's chunk_count is filled from the chunk rows).
    assert apply_stream_events(got) == ("".join(parts), 500), f"join_at={join_at}"
    assert got[-1]["message"]["content"] == "".join(parts)
    for comm in (alice, bob):
        await comm.disconnect()


# --- queued frames: the gateway's runs, with a queue like Daphne's ---------------------


def answer(frame):
    return tuple(frame.get(k) for k in ("type", "event", "code", "chunk_index", "stream_end", "req_id", "expected_chunk_index", "stream_state"))


async def test_queued_chunks_get_an_ack_each_in_order_after_one_commit(conversation, listen):
    conv = await conversation(others=("bob",))
    alice, bob = await connect_queued("alice"), await connect("bob")
    await subscribe(bob, conv.id)
    published = await listen(conv.id)
    assert (await ask(alice, chunk_frame(conv.id, "p0")))["chunk_index"] == 0
    parts = [f"p{i}" for i in range(1, 31)]
    replies = await pipeline(alice, [chunk_frame(conv.id, p, req_id=str(i), stream_end=i == 30) for i, p in enumerate(parts, 1)])
    assert [answer(r) for r in replies] == [("ack", "stream.sent", None, i, i == 30, str(i), None, None) for i in range(1, 31)]
    message = await stored()
    assert (message.content, message.stream_chunk_count, message.stream_state) == ("p0" + "".join(parts), 31, "completed")
    events = await published.until(lambda e: e["event"] == "message.updated")
    chunk_events = [e["data"] for e in events if e["event"] == "message.stream_chunk"]
    # p0 alone, then the 30 queued chunks in one transaction and one event.
    assert [(d["chunk_index"], d["last_chunk_index"]) for d in chunk_events] == [(0, 0), (1, 30)]
    assert chunk_events[1]["delta"] == "".join(parts) and chunk_events[1]["stream_end"] is True
    assert apply_stream_events(await events_until_updated(bob)) == (message.content, 31)
    for comm in (alice, bob):
        await comm.disconnect()


async def test_a_chunk_read_while_the_one_before_it_is_handled_joins_its_run(conversation, listen, monkeypatch):
    """Daphne queues a client frame from its socket-read callback. When that callback is
    ready while the chunk before it is being handled, the run lets it queue its frame
    first: two chunks sent back to back are one transaction and one event, not two."""
    from aiim_project.gateway.consumer import GatewayConsumer

    conv = await conversation()
    alice = await connect_queued("alice")
    published = await listen(conv.id)
    assert (await ask(alice, chunk_frame(conv.id, "p0")))["chunk_index"] == 0
    late = [{"type": "websocket.receive", "text": json.dumps(chunk_frame(conv.id, "p2", req_id="2", stream_end=True))}]
    admit = GatewayConsumer._admit

    async def admit_then_read_ready(self, spec):
        await admit(self, spec)
        if late:  # the read callback of the next frame, ready in this loop turn
            asyncio.get_running_loop().call_soon(alice.input_queue.put_nowait, late.pop())

    monkeypatch.setattr(GatewayConsumer, "_admit", admit_then_read_ready)
    await alice.send_json_to(chunk_frame(conv.id, "p1", req_id="1"))
    replies = [await alice.receive_json_from(timeout=10) for _ in range(2)]
    assert [answer(r) for r in replies] == [
        ("ack", "stream.sent", None, 1, False, "1", None, None),
        ("ack", "stream.sent", None, 2, True, "2", None, None),
    ]
    events = await published.until(lambda e: e["event"] == "message.updated")
    chunk_events = [e["data"] for e in events if e["event"] == "message.stream_chunk"]
    assert [(d["chunk_index"], d["last_chunk_index"]) for d in chunk_events] == [(0, 0), (1, 2)]
    await alice.disconnect()


async def test_a_bad_frame_in_a_queued_run_gets_its_usual_error_and_the_chunks_before_it_stay(conversation, settings):
    settings.MAX_MESSAGE_BYTES = 200
    conv = await conversation(others=("bob",))
    theirs = await conversation(tenant="acme")
    alice = await connect_queued("alice")
    await ask(alice, chunk_frame(conv.id, "a"))
    frames = [
        chunk_frame(conv.id, "b", chunk_index=1, req_id="1"),
        chunk_frame(conv.id, "c", req_id="2"),
        chunk_frame(conv.id, "x", chunk_index=9, req_id="3"),  # ahead
        chunk_frame(conv.id, "d", req_id="4"),
        chunk_frame(conv.id, 12, req_id="5"),  # not a string
        chunk_frame(conv.id, "e", tenant_id="acme", req_id="6"),  # another tenant's id
        chunk_frame(conv.id, "y" * 300, req_id="7"),  # too large
        {"type": "stream_chunk", "conversation_id": conv.id, "chunk": "z", "req_id": "8"},  # no client_msg_id
        chunk_frame(conv.id, "b", chunk_index=1, req_id="9"),  # a repeat
        {"type": "ping", "req_id": "10"},
        chunk_frame(theirs.id, "t", req_id="11"),
        chunk_frame("missing", "t", req_id="12"),
        chunk_frame(conv.id, "f", req_id="13", stream_end=True),
        chunk_frame(conv.id, "g", req_id="14"),  # after the end
    ]
    replies = await pipeline(alice, frames)
    assert [r.get("req_id") for r in replies] == [str(i) for i in range(1, 15)]
    assert [(r["type"], r.get("code") or r.get("chunk_index")) for r in replies] == [
        ("ack", 1), ("ack", 2), ("error", "conflict"), ("ack", 3), ("error", "invalid"), ("error", "tenant_mismatch"),
        ("error", "too_large"), ("error", "invalid"), ("ack", 1), ("pong", None), ("error", "not_found"),
        ("error", "not_found"), ("ack", 4), ("error", "conflict"),
    ]
    assert replies[2]["expected_chunk_index"] == 3 and replies[13]["stream_state"] == "completed"
    assert replies[10]["message"] == replies[11]["message"]  # another tenant's ids are missing ones
    message = await stored()
    assert (message.content, message.stream_chunk_count, message.stream_state) == ("abcdf", 5, "completed")
    # The same frames one at a time (another user, another stream) get the same answers.
    conv2 = await conversation(creator="carol", others=("bob",))
    carol = await connect("carol")
    await ask(carol, chunk_frame(conv2.id, "a"))
    one_by_one = [await ask(carol, {**f, **({"conversation_id": conv2.id} if f.get("conversation_id") == conv.id else {})}) for f in frames]
    assert [answer(r) for r in one_by_one] == [answer(r) for r in replies]
    for comm in (alice, carol):
        await comm.disconnect()


async def test_queued_chunks_count_against_the_rate_limit_exactly_as_one_at_a_time(conversation, settings, monkeypatch):
    settings.RATE_LIMIT_PER_SEC = 2
    window = float(int(time.time())) + 0.5
    monkeypatch.setattr(ratelimit, "time", SimpleNamespace(time=lambda: window))
    frames = lambda conv_id: [  # noqa: E731
        chunk_frame(conv_id, "a", cmid="s1"),  # starts s1: counts 1
        *[chunk_frame(conv_id, "b", cmid="s1", **({"chunk_index": i} if i % 2 else {})) for i in range(1, 6)],
        chunk_frame(conv_id, "a", cmid="s2", chunk_index=0),  # starts s2: counts 2
        chunk_frame(conv_id, "a", cmid="s2", chunk_index=0),  # a repeat: no count
        chunk_frame(conv_id, "a", cmid="s3", req_id="r3"),  # refused
        chunk_frame(conv_id, "a", cmid="s3", req_id="r4"),  # refused again
        chunk_frame(conv_id, "c", cmid="s1", stream_end=True),
    ]
    queued_conv, plain_conv = await conversation("rl-q", ["bob"]), await conversation("rl-p", ["bob"])
    queued, plain = await connect_queued("rl-q"), await connect("rl-p")
    replies = await pipeline(queued, frames(queued_conv.id))
    expected = [await ask(plain, f) for f in frames(plain_conv.id)]
    assert [answer(r) for r in replies] == [answer(r) for r in expected]
    assert [r.get("code") for r in replies].count("rate_limited") == 2
    assert not await Message.objects.filter(client_msg_id="s3").aexists()
    assert [m.content async for m in Message.objects.filter(sender_id="rl-q").order_by("seq")] == ["abbbbbc", "a"]
    for comm in (queued, plain):
        await comm.disconnect()


async def test_frames_queued_behind_a_run_are_handled_in_order_then_the_disconnect(conversation):
    conv = await conversation(others=("bob",))
    alice = await connect_queued("alice")
    await ask(alice, chunk_frame(conv.id, "a"))
    frames = [chunk_frame(conv.id, "b"), chunk_frame(conv.id, "c"), {"type": "send_msg", "conversation_id": conv.id, "content": "hi"},
              chunk_frame(conv.id, "A", cmid="s2"), chunk_frame(conv.id, "d"), chunk_frame(conv.id, "B", cmid="s2")]
    replies = await pipeline(alice, frames)
    assert [(r["event"], r.get("chunk_index"), r["seq"]) for r in replies] == [
        ("stream.sent", 1, 1), ("stream.sent", 2, 1), ("message.sent", None, 2), ("stream.sent", 0, 3),
        ("stream.sent", 3, 1), ("stream.sent", 1, 3),
    ]
    for frame in [chunk_frame(conv.id, "e"), chunk_frame(conv.id, "f")]:
        await alice.send_json_to(frame)
    await alice.disconnect()  # queued behind the frames: they are handled first
    assert (await stored()).content == "abcdef"
    assert (await stored("s2")).content == "AB"


async def test_flow_control_counts_the_frames_a_run_holds_and_resumes_after_it(conversation):
    conv = await conversation()
    protocols = []
    alice = await connect_queued("alice", protocols=protocols)
    await ask(alice, chunk_frame(conv.id, "a"))
    transport = protocols[0].transport
    replies = await pipeline(alice, [chunk_frame(conv.id, "b") for _ in range(150)])
    assert [r["chunk_index"] for r in replies] == list(range(1, 151))
    assert transport.pauses >= 1 and not transport.paused  # paused while 150 were queued, reading again now
    assert (await stored()).stream_chunk_count == 151
    await alice.disconnect()


async def test_a_late_joiner_reconstructs_a_stream_sent_in_queued_runs(conversation):
    conv = await conversation(others=("bob",))
    rng = random.Random()
    parts = [rng.choice(["tok", " ", "é", "\n", "好", "x" * rng.randint(1, 4)]) for _ in range(400)]
    alice, bob = await connect_queued("alice"), await connect("bob")
    await ask(alice, chunk_frame(conv.id, parts[0]))
    i, joined = 1, False
    while i < len(parts):
        n = rng.randint(1, 12)
        batch = [chunk_frame(conv.id, p, stream_end=i + k == len(parts) - 1) for k, p in enumerate(parts[i : i + n])]
        replies = await pipeline(alice, batch)
        assert [r["chunk_index"] for r in replies] == list(range(i, i + len(batch)))
        i += len(batch)
        if not joined and i > 150:
            await subscribe(bob, conv.id, since_seq=0)
            joined = True
    got = await events_until_updated(bob)
    assert got[0]["event"] == "message.created" and got[0]["message"]["stream"]["chunk_count"] > 150
    assert apply_stream_events(got) == ("".join(parts), 400)
    assert got[-1]["message"]["content"] == "".join(parts)
    for comm in (alice, bob):
        await comm.disconnect()


# --- end to end: real Daphne processes ------------------------------------------------


async def recv(ws):
    """A bounded wait: a stuck server fails the test instead of hanging the suite."""
    return await ws_recv(ws, 15)


def _get_json(url, token):
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.redis
@pytest.mark.e2e
async def test_sigkill_mid_stream_keeps_every_acked_chunk_and_the_client_resumes_elsewhere(conversation, daphne):
    import websockets

    conv = await conversation(others=("bob",))
    first, second = await asyncio.to_thread(daphne, 2)
    alice_token, bob_token = mint_token(user_id="alice"), mint_token(user_id="bob")
    parts = [f"t{i} " for i in range(200)]
    async with websockets.connect(f"{second.ws_url}?token={bob_token}") as bob:
        await bob.send(json.dumps({"type": "subscribe", "conversation_id": conv.id}))
        assert (await recv(bob))["type"] == "subscribed"
        acked = -1
        async with websockets.connect(f"{first.ws_url}?token={alice_token}") as alice:
            # Pipelined: many chunks are in flight when the process dies.
            for i, part in enumerate(parts[:150]):
                await alice.send(json.dumps(chunk_frame(conv.id, part, chunk_index=i)))
            while acked < 60:
                ack = await recv(alice)
                assert ack["type"] == "ack", ack
                acked = ack["chunk_index"]
            await asyncio.to_thread(first.kill)
        message = (await asyncio.to_thread(_get_json, f"{second.url}/api/aiim/messages/{conv.id}", alice_token))["messages"][0]
        count = message["stream"]["chunk_count"]
        assert count >= acked + 1
        assert message["content"] == "".join(parts[:count])
        assert message["stream"]["state"] == "streaming"
        async with websockets.connect(f"{second.ws_url}?token={alice_token}") as alice:
            for i in range(count, len(parts)):
                await alice.send(json.dumps(chunk_frame(conv.id, parts[i], chunk_index=i, stream_end=i == len(parts) - 1)))
                ack = await recv(alice)
                assert (ack["type"], ack["chunk_index"]) == ("ack", i), ack
        got = []
        while not got or got[-1]["event"] != "message.updated":
            got.append((await recv(bob))["data"])
    assert apply_stream_events(got) == ("".join(parts), len(parts))
    final = (await asyncio.to_thread(_get_json, f"{second.url}/api/aiim/messages/{conv.id}", bob_token))["messages"][0]
    assert (final["content"], final["stream"]["state"], final["stream"]["chunk_count"]) == ("".join(parts), "completed", 200)


@pytest.mark.redis
@pytest.mark.e2e
async def test_an_idle_stream_is_aborted_by_the_servers_reaper(conversation, daphne):
    import websockets

    conv = await conversation(others=("bob",))
    (server,) = await asyncio.to_thread(daphne, 1, STREAM_IDLE_TIMEOUT="1")
    async with websockets.connect(f"{server.ws_url}?token={mint_token(user_id='bob')}") as bob:
        await bob.send(json.dumps({"type": "subscribe", "conversation_id": conv.id}))
        assert (await recv(bob))["type"] == "subscribed"
        async with websockets.connect(f"{server.ws_url}?token={mint_token(user_id='alice')}") as alice:
            await alice.send(json.dumps(chunk_frame(conv.id, "then silence")))
            assert (await recv(alice))["type"] == "ack"
            got = []
            while not got or got[-1]["event"] != "message.updated":
                got.append((await recv(bob))["data"])
    assert got[-1]["message"]["stream"]["state"] == "aborted"
    assert got[-1]["message"]["content"] == "then silence"


@pytest.mark.redis
@pytest.mark.e2e
async def test_a_stream_started_over_rest_is_reaped_by_the_server_too(conversation, daphne):
    conv = await conversation(others=("bob",))
    (server,) = await asyncio.to_thread(daphne, 1, STREAM_IDLE_TIMEOUT="1")
    token = mint_token(user_id="alice")

    def post_chunk():
        body = json.dumps({"conversation_id": conv.id, "client_msg_id": "rest", "chunk": "kept"}).encode()
        request = urllib.request.Request(
            f"{server.url}/api/aiim/messages/stream",
            data=body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status

    assert await asyncio.to_thread(post_chunk) == 201
    for _ in range(100):
        message = (await asyncio.to_thread(_get_json, f"{server.url}/api/aiim/messages/{conv.id}", token))["messages"][0]
        if message["stream"]["state"] != "streaming":
            break
        await asyncio.sleep(0.1)
    assert (message["stream"]["state"], message["content"]) == ("aborted", "kept")


@pytest.mark.redis
@pytest.mark.e2e
async def test_pipelined_chunks_under_daphne_are_batched_answered_in_order_and_rebuilt_exactly(conversation, daphne):
    """Real Daphne, real clients: 300 chunks sent without waiting, with a refused chunk and a
    ping among them. Every frame gets its own answer in order, the refused chunk its usual
    409, the stream ends with exactly the accepted text, the chunk events are fewer than the
    chunks (runs were batched) yet add up to the text for a live subscriber and for one who
    subscribes with since_seq while the stream is being written."""
    import websockets

    conv = await conversation(others=("bob", "carol"))
    (server,) = await asyncio.to_thread(daphne, 1)
    parts = [f"t{i} " for i in range(300)]

    def ws(user):
        return websockets.connect(f"{server.ws_url}?token={mint_token(user_id=user)}")

    async def until_updated(client):
        got = []
        while not got or got[-1]["event"] != "message.updated":
            frame = await recv(client)
            if frame["type"] == "event":
                got.append(frame["data"])
        return got

    async with ws("bob") as bob, ws("carol") as carol, ws("alice") as alice:
        await bob.send(json.dumps({"type": "subscribe", "conversation_id": conv.id}))
        assert (await recv(bob))["type"] == "subscribed"
        frames = [chunk_frame(conv.id, p, chunk_index=i, req_id=str(i), stream_end=i == 299) for i, p in enumerate(parts)]
        frames.insert(150, chunk_frame(conv.id, "bad", chunk_index=400, req_id="bad"))
        frames.insert(200, {"type": "ping", "req_id": "ping"})
        await alice.send(json.dumps(frames[0]))
        assert (await recv(alice))["type"] == "ack"  # the stream exists: the rest can be batched
        bob_reads = asyncio.create_task(until_updated(bob))  # read as it comes: a slow reader is cut off
        for frame in frames[1:]:
            await alice.send(json.dumps(frame))
        replies = []
        for _ in frames[1:]:
            replies.append(await recv(alice))
            if len(replies) == 100:  # mid-stream
                await carol.send(json.dumps({"type": "subscribe", "conversation_id": conv.id, "since_seq": 0}))
                carol_reads = asyncio.create_task(until_updated(carol))
        assert [r.get("req_id") for r in replies] == [f["req_id"] for f in frames[1:]]
        for frame, reply in zip(frames[1:], replies):
            if frame["req_id"] == "bad":
                assert (reply["type"], reply["code"], reply["expected_chunk_index"]) == ("error", "conflict", 150)
            elif frame["req_id"] == "ping":
                assert reply["type"] == "pong"
            else:
                assert (reply["type"], reply["chunk_index"], reply["stream_end"]) == ("ack", frame["chunk_index"], frame["chunk_index"] == 299)
        got_bob, got_carol = await bob_reads, await carol_reads
    text = "".join(parts)
    chunk_events = [d for d in got_bob if d["event"] == "message.stream_chunk"]
    assert len(chunk_events) < 300
    assert apply_stream_events(got_bob) == (text, 300)
    assert apply_stream_events(got_carol) == (text, 300)
    assert got_bob[-1]["message"]["content"] == got_carol[-1]["message"]["content"] == text
    message = await stored()
    assert (message.content, message.stream_chunk_count, message.stream_state) == (text, 300, "completed")
