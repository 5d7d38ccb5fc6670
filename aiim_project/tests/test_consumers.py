"""The gateway through channels.testing.WebsocketCommunicator: every frame, error and close
code, tenant isolation for every frame, and the live effects (events, membership, presence)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import django.db
import orjson
import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.core.exceptions import ImproperlyConfigured
from django.db import connection

from aiim_project.asgi import application
from aiim_project.core.events import conversation_group
from aiim_project.core.frames import FrameSpec
from aiim_project.core.logs import ContextFilter, conn_id_var
from aiim_project.gateway import liveness, reads, subscriptions
from aiim_project.gateway.delivery import SubscriptionRevoked
from aiim_project.gateway.hub import get_hub
from aiim_project.wiring import frame_table, merge
from messaging import frames, services
from messaging.selectors import SnapshotRequest
from receipts import services as receipt_services

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT = 3


@pytest.fixture
async def ws(token):
    opened: list[WebsocketCommunicator] = []

    async def connect(user: str = "alice", tenant: str = "default", *, ttl: int | None = 3600, **kw) -> WebsocketCommunicator:
        comm = WebsocketCommunicator(application, f"/api/aiim/ws?token={token(user, tenant, ttl)}", **kw)
        connected, _ = await comm.connect(timeout=TIMEOUT)
        assert connected
        opened.append(comm)
        # The accept goes out once the user group is joined; the first answer proves the
        # connect handler finished (the presence lease is written without waiting).
        assert await request(comm, {"type": "ping"}) == {"type": "pong"}
        return comm

    yield connect
    for comm in opened:
        await comm.disconnect()


@pytest.fixture
def conv(make_conversation):
    async def make(creator="alice", others=("bob",), **kw):
        return await database_sync_to_async(make_conversation)(creator, others, **kw)

    return make


async def recv(comm: WebsocketCommunicator) -> dict:
    return await comm.receive_json_from(timeout=TIMEOUT)


async def request(comm: WebsocketCommunicator, frame: dict) -> dict:
    await comm.send_json_to(frame)
    return await recv(comm)


async def closed_with(comm: WebsocketCommunicator, timeout: float = TIMEOUT) -> int:
    message = await comm.receive_output(timeout=timeout)
    while message["type"] == "websocket.send":
        message = await comm.receive_output(timeout=timeout)
    assert message["type"] == "websocket.close"
    return message["code"]


async def subscribed(comm, conversation_id: str, **kw) -> dict:
    reply = await request(comm, {"type": "subscribe", "conversation_id": conversation_id, **kw})
    assert reply["type"] == "subscribed", reply
    return reply


def data(frame: dict) -> dict:
    assert frame["type"] == "event", frame
    return frame["data"]


async def send_db(conversation_id: str, sender: str = "alice", content="hi", tenant="default", **kw):
    message, _ = await database_sync_to_async(services.message_send)(
        tenant=tenant, sender=sender, conversation_id=conversation_id, content=content, **kw
    )
    return message


# --- authentication ---------------------------------------------------------------------


async def test_query_token_connects(ws):
    comm = await ws("alice")
    assert await request(comm, {"type": "ping", "req_id": "p1"}) == {"type": "pong", "req_id": "p1"}


async def test_bearer_subprotocol_is_selected(token):
    comm = WebsocketCommunicator(application, "/api/aiim/ws", subprotocols=["bearer", token("alice")])
    connected, subprotocol = await comm.connect(timeout=TIMEOUT)
    assert connected and subprotocol == "bearer"
    assert (await request(comm, {"type": "ping"}))["type"] == "pong"
    await comm.disconnect()


@pytest.mark.parametrize(
    "path",
    ["/api/aiim/ws", "/api/aiim/ws?token=", "/api/aiim/ws?token=not.a.jwt", "/api/aiim/ws?token=EXPIRED", "/api/aiim/ws?token=FORGED"],
)
async def test_missing_bad_forged_or_expired_token_is_accepted_then_closed_4401(token, path):
    path = path.replace("EXPIRED", token("alice", ttl=-10)).replace("FORGED", token("alice")[:-3] + "abc")
    comm = WebsocketCommunicator(application, path)
    connected, _ = await comm.connect(timeout=TIMEOUT)
    assert connected
    assert await closed_with(comm) == 4401


async def test_bad_token_in_subprotocol_still_selects_bearer_then_closes_4401():
    comm = WebsocketCommunicator(application, "/api/aiim/ws", subprotocols=["bearer", "garbage"])
    connected, subprotocol = await comm.connect(timeout=TIMEOUT)
    assert connected and subprotocol == "bearer"
    assert await closed_with(comm) == 4401


async def test_token_expiring_while_connected_closes_4401(ws):
    comm = await ws("alice", ttl=3)  # exp is whole seconds: 2 to 3 s from now
    assert (await request(comm, {"type": "ping"}))["type"] == "pong"
    assert await closed_with(comm, timeout=6) == 4401


# --- bad frames -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, code",
    [
        ("not json", "invalid"),
        ("[1, 2]", "invalid"),
        ('"a string"', "invalid"),
        ("{}", "invalid"),
        ('{"type": 5}', "invalid"),
        ('{"type": "no_such_frame", "req_id": "r"}', "invalid"),
        ('{"type": "subscribe", "req_id": "r"}', "invalid"),
        ('{"type": "subscribe", "conversation_id": 7}', "invalid"),
        ('{"type": "subscribe", "conversation_id": ""}', "invalid"),
        ('{"type": "subscribe", "conversation_id": "x", "since_seq": "3"}', "invalid"),
        ('{"type": "subscribe", "conversation_id": "x", "since_seq": -1}', "invalid"),
        ('{"type": "subscribe", "conversation_id": "x", "since_seq": true}', "invalid"),
        ('{"type": "send_msg", "conversation_id": "x"}', "invalid"),
        ('{"type": "typing", "conversation_id": "x"}', "invalid"),
        ('{"type": "typing", "conversation_id": "x", "state": "dancing"}', "invalid"),
    ],
)
async def test_bad_frames_get_an_error_and_the_connection_stays_open(ws, text, code):
    comm = await ws("alice")
    await comm.send_to(text_data=text)
    error = await recv(comm)
    assert error["type"] == "error" and error["code"] == code, error
    assert isinstance(error["message"], str)
    if '"req_id": "r"' in text:
        assert error["req_id"] == "r"
    assert (await request(comm, {"type": "ping"}))["type"] == "pong"


async def test_binary_frame_is_invalid(ws):
    comm = await ws("alice")
    await comm.send_to(bytes_data=b"\x00\x01")
    assert (await recv(comm))["code"] == "invalid"
    assert (await request(comm, {"type": "ping"}))["type"] == "pong"


async def test_oversized_frame_is_too_large(ws, settings):
    settings.MAX_MESSAGE_BYTES = 100
    comm = await ws("alice")
    big = orjson.dumps({"type": "send_msg", "conversation_id": "x", "content": "a" * 20000, "req_id": "big"}).decode()
    await comm.send_to(text_data=big)
    error = await recv(comm)
    assert error["code"] == "too_large"
    assert (await request(comm, {"type": "ping"}))["type"] == "pong"


async def test_error_frame_names_the_conversation(ws, conv):
    c = await conv()
    comm = await ws("alice")
    error = await request(comm, {"type": "send_msg", "conversation_id": c.id, "content": "", "req_id": "e"})
    assert error == {
        "type": "error",
        "code": "invalid",
        "message": error["message"],
        "errors": error["errors"],
        "req_id": "e",
        "conversation_id": c.id,
    }


# --- subscribe / unsubscribe -------------------------------------------------------------


async def test_subscribe_then_live_messages_in_order(ws, conv):
    c = await conv()
    await send_db(c.id, content="before")
    alice, bob = await ws("alice"), await ws("bob")
    reply = await subscribed(bob, c.id, req_id="s1")
    assert reply == {"type": "subscribed", "conversation_id": c.id, "last_seq": 1, "req_id": "s1"}
    await bob.receive_nothing(timeout=0.1)  # no replay without since_seq
    for i in range(5):
        ack = await request(alice, {"type": "send_msg", "conversation_id": c.id, "content": f"m{i}", "req_id": f"r{i}"})
        assert ack["type"] == "ack" and ack["event"] == "message.sent" and ack["req_id"] == f"r{i}"
    got = [data(await recv(bob)) for _ in range(5)]
    assert [d["message"]["seq"] for d in got] == [2, 3, 4, 5, 6]
    assert [d["message"]["content"] for d in got] == [f"m{i}" for i in range(5)]
    assert all(d["event"] == "message.created" and d["conversation_id"] == c.id for d in got)
    await bob.receive_nothing(timeout=0.1)


async def test_subscribe_with_since_seq_replays_then_goes_live(ws, conv):
    c = await conv()
    for i in range(4):
        await send_db(c.id, content=f"old{i}")
    bob = await ws("bob")
    reply = await subscribed(bob, c.id, since_seq=1)
    assert reply["last_seq"] == 4 and "recovered" not in reply
    assert [data(await recv(bob))["message"]["seq"] for _ in range(3)] == [2, 3, 4]
    await send_db(c.id, content="new")
    assert data(await recv(bob))["message"]["seq"] == 5
    await bob.receive_nothing(timeout=0.1)


async def _read_up_to(user: str, conversation_id: str, kind: str, seq: int) -> None:
    await database_sync_to_async(receipt_services.cursor_advance)(
        tenant="default", user_id=user, conversation_id=conversation_id, kind=kind, seq=seq
    )


async def test_replayed_and_gap_filled_messages_carry_their_current_status(ws, conv):
    c = await conv("alice", ("bob", "carol"))
    for i in range(4):
        await send_db(c.id, content=f"old{i}")
    await _read_up_to("bob", c.id, "read", 3)
    await _read_up_to("carol", c.id, "read", 1)
    await _read_up_to("carol", c.id, "delivered", 2)
    expected = {1: "read", 2: "delivered", 3: "sent", 4: "sent"}
    alice = await ws("alice")
    await subscribed(alice, c.id, since_seq=0)
    replayed = [data(await recv(alice))["message"] for _ in range(4)]
    assert {m["seq"]: m["status"] for m in replayed} == expected
    # The gap fill renders stored messages the same way.
    filled = await subscriptions.load_stored("default", "alice", c.id, 0, 4, 10)
    assert {row.seq: orjson.loads(row.frame)["data"]["message"]["status"] for row in filled} == expected


@pytest.mark.parametrize("count", [2, 20])
def test_a_batch_of_snapshots_costs_four_queries_whatever_its_size(make_conversation, send, django_assert_num_queries, count):
    convs = [make_conversation("alice", ("bob", "carol")) for _ in range(2)]
    for c in convs:
        for _ in range(count):
            send(c, "alice", "x")
    asks = [(SnapshotRequest("default", u, c.id, since), 100) for c in convs for u in ("alice", "bob", "carol") for since in (0, 1, None)]
    # last seqs, memberships, the messages of every replay, the members (for statuses)
    with django_assert_num_queries(4):
        got = reads.read_snapshots(asks)
    for (r, _), snap in zip(asks, got, strict=True):
        assert snap.last_seq == count
        assert [row.seq for row in snap.rows] == list(range((count if r.since_seq is None else r.since_seq) + 1, count + 1))


async def test_subscribe_with_too_many_missed_is_not_recovered(ws, conv, settings):
    settings.WS_RECOVERY_LIMIT = 3
    c = await conv()
    for i in range(5):
        await send_db(c.id, content=f"old{i}")
    bob = await ws("bob")
    reply = await subscribed(bob, c.id, since_seq=0)
    assert reply["recovered"] is False and reply["last_seq"] == 5
    await bob.receive_nothing(timeout=0.1)
    await send_db(c.id, content="new")
    assert data(await recv(bob))["message"]["seq"] == 6


async def test_subscribe_not_member_is_forbidden(ws, conv):
    c = await conv("alice", ("bob",))
    carol = await ws("carol")
    error = await request(carol, {"type": "subscribe", "conversation_id": c.id})
    assert error["code"] == "forbidden"
    await send_db(c.id)
    await carol.receive_nothing(timeout=0.2)


@pytest.mark.parametrize("frame_type", ["subscribe", "send_msg", "typing"])
async def test_an_id_the_database_cannot_store_is_a_client_error_not_a_server_error(ws, frame_type):
    """A NUL in an id: PostgreSQL refuses it (`invalid`), SQLite finds no such conversation."""
    alice = await ws("alice")
    error = await request(alice, {"type": frame_type, "conversation_id": "c\x00", "content": "hi", "state": "typing"})
    assert error["type"] == "error"
    assert error["code"] == ("invalid" if connection.vendor == "postgresql" else "not_found"), error


async def test_unsubscribe_stops_events(ws, conv):
    c = await conv()
    bob = await ws("bob")
    await subscribed(bob, c.id)
    reply = await request(bob, {"type": "unsubscribe", "conversation_id": c.id, "req_id": "u"})
    assert reply == {"type": "unsubscribed", "conversation_id": c.id, "req_id": "u"}
    await send_db(c.id)
    await bob.receive_nothing(timeout=0.2)


async def test_unsubscribe_is_idempotent_as_in_the_original(ws, conv):
    """The original AIIM answered `unsubscribed` whether or not the connection was
    subscribed; its clients unsubscribe blindly (a page's button, a cleanup on leave)."""
    c = await conv()
    bob = await ws("bob")
    await subscribed(bob, c.id)
    for req_id in ("u1", "u2"):
        reply = await request(bob, {"type": "unsubscribe", "conversation_id": c.id, "req_id": req_id})
        assert reply == {"type": "unsubscribed", "conversation_id": c.id, "req_id": req_id}
    never = await request(bob, {"type": "unsubscribe", "conversation_id": "never-subscribed", "req_id": "u3"})
    assert never == {"type": "unsubscribed", "conversation_id": "never-subscribed", "req_id": "u3"}
    await send_db(c.id)
    await bob.receive_nothing(timeout=0.2)


# --- send_msg ---------------------------------------------------------------------------


async def test_send_msg_ack_and_idempotent_repeat(ws, conv):
    c = await conv()
    alice, bob = await ws("alice"), await ws("bob")
    await subscribed(bob, c.id)
    frame = {"type": "send_msg", "conversation_id": c.id, "content": {"text": "hi"}, "client_msg_id": "k1", "msg_type": "ai"}
    first = await request(alice, {**frame, "req_id": "a"})
    again = await request(alice, {**frame, "req_id": "b"})
    assert first["seq"] == again["seq"] == 1 and first["message_id"] == again["message_id"]
    assert first["client_msg_id"] == "k1" and again["req_id"] == "b"
    event = data(await recv(bob))
    assert event["message"]["type"] == "ai" and event["message"]["content"] == {"text": "hi"}
    await bob.receive_nothing(timeout=0.2)  # one event for two sends


async def test_send_msg_errors(ws, conv, settings):
    settings.MAX_MESSAGE_BYTES = 50
    c = await conv("alice", ("bob",))
    alice, carol = await ws("alice"), await ws("carol")
    assert (await request(alice, {"type": "send_msg", "conversation_id": c.id, "content": "x" * 100}))["code"] == "too_large"
    assert (await request(alice, {"type": "send_msg", "conversation_id": c.id, "content": "x", "msg_type": "nope"}))["code"] == "invalid"
    assert (await request(carol, {"type": "send_msg", "conversation_id": c.id, "content": "x"}))["code"] == "forbidden"
    assert (await request(alice, {"type": "send_msg", "conversation_id": c.id, "content": "x", "tenant_id": "other"}))["code"] == "tenant_mismatch"


async def test_dependency_failure_in_a_handler_is_unavailable_and_the_connection_lives(ws, conv, monkeypatch):
    c = await conv()
    alice = await ws("alice")

    def database_down(**kw):
        raise django.db.OperationalError("connection refused")

    monkeypatch.setattr(services, "message_send", database_down)
    error = await request(alice, {"type": "send_msg", "conversation_id": c.id, "content": "x", "req_id": "d"})
    assert error["code"] == "unavailable" and error["req_id"] == "d"
    assert (await request(alice, {"type": "ping"}))["type"] == "pong"


# --- typing, ping ------------------------------------------------------------------------


async def test_typing_reaches_the_others_not_the_typist(ws, conv):
    c = await conv("alice", ("bob",))
    alice, alice2, bob = await ws("alice"), await ws("alice"), await ws("bob")
    for comm in (alice, alice2, bob):
        await subscribed(comm, c.id)
    await alice.send_json_to({"type": "typing", "conversation_id": c.id, "state": "thinking"})
    event = data(await recv(bob))
    assert event == {"event": "typing", "conversation_id": c.id, "user_id": "alice", "state": "thinking"}
    await alice.receive_nothing(timeout=0.1)
    await alice2.receive_nothing(timeout=0.1)


async def test_typing_without_subscription_checks_membership(ws, conv):
    c = await conv("alice", ("bob",))
    carol, bob = await ws("carol"), await ws("bob")
    await subscribed(bob, c.id)
    assert (await request(carol, {"type": "typing", "conversation_id": c.id, "state": "typing"}))["code"] == "forbidden"
    await bob.receive_nothing(timeout=0.1)
    alice = await ws("alice")
    await alice.send_json_to({"type": "typing", "conversation_id": c.id, "state": "idle"})
    assert data(await recv(bob))["state"] == "idle"


async def test_pong_gets_no_answer(ws):
    comm = await ws("alice")
    await comm.send_json_to({"type": "pong"})
    await comm.receive_nothing(timeout=0.1)


async def test_server_pings_when_idle_then_closes_4408(ws, settings):
    settings.WS_PING_INTERVAL = 0.2
    settings.WS_IDLE_TIMEOUT = 0.7
    comm = await ws("alice")
    assert await comm.receive_json_from(timeout=1) == {"type": "ping"}
    assert await closed_with(comm, timeout=2) == 4408


async def test_client_frames_keep_the_connection_alive(ws, settings):
    settings.WS_PING_INTERVAL = 0.2
    settings.WS_IDLE_TIMEOUT = 0.5
    comm = await ws("alice")
    for _ in range(6):  # 1.2 s in total, well past the idle timeout
        await asyncio.sleep(0.2)
        await comm.send_json_to({"type": "pong"})
    while not await comm.receive_nothing(timeout=0.05):
        assert (await recv(comm)) == {"type": "ping"}
    assert (await request(comm, {"type": "ping"}))["type"] == "pong"


# --- rate limit and flood ----------------------------------------------------------------


async def test_rate_limited_frames_error_then_flooding_closes_4429(ws, conv, settings):
    settings.RATE_LIMIT_PER_SEC = 2
    c = await conv()
    alice = await ws("alice")
    codes = []
    for i in range(liveness.FLOOD_STRIKES + 10):
        await alice.send_json_to({"type": "typing", "conversation_id": c.id, "state": "typing", "req_id": str(i)})
    while True:
        message = await alice.receive_output(timeout=TIMEOUT)
        if message["type"] == "websocket.close":
            break
        frame = orjson.loads(message["text"])
        codes.append(frame.get("code"))
    assert message["code"] == 4429
    assert codes.count("rate_limited") == liveness.FLOOD_STRIKES + 1
    assert set(codes) == {"rate_limited"}


async def test_each_connections_log_lines_carry_its_own_connection_id(ws, conv, settings, caplog):
    caplog.handler.addFilter(ContextFilter())  # what the production handlers stamp on a line
    caplog.set_level(logging.INFO, logger="aiim.gateway")
    refused = WebsocketCommunicator(application, "/api/aiim/ws?token=forged")
    assert (await refused.connect(timeout=TIMEOUT))[0]
    assert await closed_with(refused) == 4401
    settings.RATE_LIMIT_PER_SEC = 1
    alice = await ws("alice")
    for _ in range(liveness.FLOOD_STRIKES + 3):
        await alice.send_json_to({"type": "ping"})
        await alice.send_json_to({"type": "send_msg", "conversation_id": "missing", "content": "x"})
    assert await closed_with(alice) == 4429
    by_msg = {r.getMessage(): r.conn_id for r in caplog.records if r.name == "aiim.gateway"}
    refused_id, flooder_id = by_msg["ws auth refused: token_invalid"], by_msg["ws closed for flooding"]
    assert refused_id and flooder_id and refused_id != flooder_id
    assert conn_id_var.get() == ""  # set in the connection's task, not leaked to its caller


async def test_unlimited_frames_are_not_counted(ws, settings):
    settings.RATE_LIMIT_PER_SEC = 1
    comm = await ws("alice")
    for _ in range(5):
        assert (await request(comm, {"type": "ping"}))["type"] == "pong"


# --- the one thread-sensitive thread ------------------------------------------------------


async def test_no_frame_or_disconnect_waits_for_the_thread_sensitive_thread(ws, conv):
    """asgiref runs every thread-sensitive call of a process on ONE thread (Channels'
    `database_sync_to_async`, its `aclose_old_connections`): with that thread busy, a
    connection still gets every answer and its disconnect still ends it."""
    c = await conv(others=("bob",))
    other = await conv(others=("bob",))
    alice = await ws("alice")
    await subscribed(alice, c.id)
    first = await send_db(c.id)
    assert data(await recv(alice))["event"] == "message.created"
    release = threading.Event()
    busy = asyncio.ensure_future(sync_to_async(release.wait)())  # occupies that thread
    try:
        assert (await request(alice, {"type": "send_msg", "conversation_id": c.id, "content": "x"}))["type"] == "ack"
        await recv(alice)  # the message's own event
        for frame, event in [
            ({"type": "delivered", "conversation_id": c.id, "up_to_seq": first.seq}, "receipt.delivered"),
            ({"type": "read", "conversation_id": c.id, "last_read_seq": first.seq}, "receipt.read"),
            ({"type": "stream_chunk", "conversation_id": c.id, "client_msg_id": "s", "chunk": "a"}, "stream.sent"),
            ({"type": "stream_abort", "conversation_id": c.id, "client_msg_id": "s"}, "stream.aborted"),
        ]:
            reply = await request(alice, frame)
            while reply["type"] == "event":  # the frame's own events come after its ack
                reply = await recv(alice)
            assert (reply["type"], reply.get("event")) == ("ack", event), reply
        # typing for a conversation not subscribed here checks membership in the database
        bob = await ws("bob")
        await subscribed(bob, other.id)
        await alice.send_json_to({"type": "typing", "conversation_id": other.id, "state": "typing"})
        assert data(await recv(bob))["event"] == "typing"
        await alice.disconnect(timeout=TIMEOUT)  # raises TimeoutError if the consumer did not end
    finally:
        release.set()
        await busy


# --- tenant isolation: another tenant's conversation answers like a missing one --------


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "subscribe"},
        {"type": "subscribe", "since_seq": 0},
        {"type": "unsubscribe"},
        {"type": "send_msg", "content": "x"},
        {"type": "typing", "state": "typing"},
    ],
)
async def test_other_tenants_conversation_is_not_found_like_a_missing_one(ws, conv, frame):
    theirs = await conv("alice", ("bob",), tenant="acme")
    await send_db(theirs.id, tenant="acme")
    alice = await ws("alice", tenant="default")
    alice_acme = await ws("alice", tenant="acme")
    await subscribed(alice_acme, theirs.id)
    foreign = await request(alice, {**frame, "conversation_id": theirs.id, "req_id": "x"})
    missing = await request(alice, {**frame, "conversation_id": "no-such-conversation", "req_id": "x"})
    if frame["type"] == "unsubscribe":  # idempotent: the same answer for any id
        assert foreign["type"] == missing["type"] == "unsubscribed"
    else:
        assert foreign["code"] == missing["code"] == "not_found"
    assert {k: v for k, v in foreign.items() if k != "conversation_id"} == {k: v for k, v in missing.items() if k != "conversation_id"}
    await alice_acme.receive_nothing(timeout=0.1)  # nothing leaked into the real tenant's stream


async def test_same_ids_in_two_tenants_do_not_share_events(ws, conv):
    c = await conv("alice", ("bob",), tenant="acme")
    bob_default = await ws("bob", tenant="default")
    bob_acme = await ws("bob", tenant="acme")
    await subscribed(bob_acme, c.id)
    await send_db(c.id, tenant="acme")
    assert data(await recv(bob_acme))["message"]["seq"] == 1
    await bob_default.receive_nothing(timeout=0.2)


# --- membership and the user group ------------------------------------------------------


async def test_removed_member_stops_receiving_at_once(ws, conv):
    c = await conv("alice", ("bob", "carol"))
    bob, carol = await ws("bob"), await ws("carol")
    await subscribed(bob, c.id)
    await subscribed(carol, c.id)
    await asyncio.sleep(0.2)  # past the tail checks, which would notice the removal too
    await database_sync_to_async(services.member_remove)(tenant="default", actor="alice", conversation_id=c.id, user_id="bob")
    left_bob = data(await recv(bob))
    left_carol = data(await recv(carol))
    assert left_bob["event"] == left_carol["event"] == "member.left"
    assert left_bob["user_id"] == "bob"
    await bob.receive_nothing(timeout=0.1)  # the copy from the user group is not repeated
    await send_db(c.id)
    assert data(await recv(carol))["event"] == "message.created"
    await bob.receive_nothing(timeout=0.2)
    assert not (await request(bob, {"type": "subscribe", "conversation_id": c.id}))["type"] == "subscribed"


async def test_added_member_hears_of_it_without_subscribing(ws, conv):
    c = await conv("alice", ("bob",))
    dave = await ws("dave")
    await database_sync_to_async(services.member_add)(tenant="default", actor="alice", conversation_id=c.id, user_ids=["dave"])
    event = data(await recv(dave))
    assert event["event"] == "member.joined" and event["user_id"] == "dave"
    await dave.receive_nothing(timeout=0.1)


# --- presence --------------------------------------------------------------------------


async def test_presence_online_while_a_connection_lives(ws, api):
    def presence(user_ids: str, tenant: str = "default") -> dict:
        r = api("zed", tenant).get(f"/api/aiim/presence?user_ids={user_ids}")
        assert r.status_code == 200, r.content
        return {p["user_id"]: p for p in r.json()["presence"]}

    lookup = database_sync_to_async(presence)
    assert (await lookup("pia"))["pia"] == {"user_id": "pia", "online": False, "last_seen_at": None}
    first, second = await ws("pia"), await ws("pia")
    # The lease is written just after the handshake, without holding the connection up.
    deadline = time.monotonic() + 2
    while not (now := await lookup("pia,quinn"))["pia"]["online"] and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert now["pia"]["online"] is True and now["pia"]["last_seen_at"]
    assert now["quinn"]["online"] is False
    assert (await lookup("pia", "acme"))["pia"]["online"] is False  # same id, other tenant
    await first.disconnect()
    assert (await lookup("pia"))["pia"]["online"] is True
    await second.disconnect()
    gone = (await lookup("pia"))["pia"]
    assert gone["online"] is False and gone["last_seen_at"]


# --- the frame table --------------------------------------------------------------------


def test_frame_table_refuses_duplicate_frame_types():
    spec = FrameSpec(handler=frames.ping)
    with pytest.raises(ImproperlyConfigured, match="'ping'"):
        merge(("a", {"ping": spec}), ("b", {"ping": spec}))
    assert set(merge(("a", {"x": spec}), ("b", {"y": spec}))) == {"x", "y"}


def test_gateway_table_holds_every_apps_frames():
    import receipts.frames
    import streaming.frames

    FRAMES = frame_table()
    for table in (frames.FRAMES, receipts.frames.FRAMES, streaming.frames.FRAMES):
        for frame_type, spec in table.items():
            assert FRAMES[frame_type] is spec


# --- metrics ----------------------------------------------------------------------------


async def test_frames_connections_and_fanout_latency_are_measured(ws, conv):
    from prometheus_client import REGISTRY

    def sample(name: str, **labels) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    c = await conv()
    before = (
        sample("aiim_fanout_seconds_count"),
        sample("aiim_ws_frames_in_total", type="send_msg"),
        sample("aiim_messages_created_total", via="ws"),
        sample("aiim_errors_total", code="invalid", via="ws"),
    )
    alice, bob = await ws("alice"), await ws("bob")
    assert sample("aiim_ws_connections") >= 2
    await subscribed(bob, c.id)
    await asyncio.sleep(0.2)  # past the subscription's tail check: the message arrives live
    assert (await request(alice, {"type": "send_msg", "conversation_id": c.id, "content": "m"}))["type"] == "ack"
    assert data(await recv(bob))["event"] == "message.created"
    await alice.send_to(text_data="nope")
    assert (await recv(alice))["code"] == "invalid"
    after = (
        sample("aiim_fanout_seconds_count"),
        sample("aiim_ws_frames_in_total", type="send_msg"),
        sample("aiim_messages_created_total", via="ws"),
        sample("aiim_errors_total", code="invalid", via="ws"),
    )
    assert [b - a for a, b in zip(before, after, strict=True)] == [1, 1, 1, 1]


# --- streams through ordered delivery ----------------------------------------------------


async def test_subscriber_joining_mid_stream_gets_snapshot_then_exactly_the_later_chunks(ws, conv):
    c = await conv("alice", ("bob",))
    alice, watcher = await ws("alice"), await ws("bob")
    await subscribed(watcher, c.id)
    parts = [f"p{i} " for i in range(10)]

    async def chunk(i: int, end: bool = False) -> None:
        frame = {"type": "stream_chunk", "conversation_id": c.id, "client_msg_id": "s1", "chunk": parts[i], "stream_end": end}
        ack = await request(alice, frame)
        assert ack["type"] == "ack" and ack["chunk_index"] == i, ack

    for i in range(5):
        await chunk(i)
    late = await ws("bob")
    await subscribed(late, c.id, since_seq=0)
    for i in range(5, 9):
        await chunk(i)
    await chunk(9, end=True)

    async def text_seen(comm) -> str:
        created = data(await recv(comm))
        assert created["event"] == "message.created"
        text, next_index = created["message"]["content"], created["message"]["stream"]["chunk_count"]
        while True:
            event = data(await recv(comm))
            if event["event"] == "message.updated":
                assert event["message"]["stream"]["state"] == "completed"
                assert event["message"]["content"] == text
                return text
            assert event["event"] == "message.stream_chunk" and event["chunk_index"] == next_index, event
            text += event["delta"]
            next_index = event["last_chunk_index"] + 1

    assert await text_seen(watcher) == "".join(parts)
    assert await text_seen(late) == "".join(parts)
    await late.receive_nothing(timeout=0.1)



async def test_member_removed_while_its_event_was_lost_is_cut_off_at_the_next_read(ws, conv):
    from channels.layers import get_channel_layer

    from aiim_project.core import events
    from messaging.models import Member

    c = await conv("alice", ("bob",))
    bob = await ws("bob")
    await subscribed(bob, c.id)
    await asyncio.sleep(0.2)  # past the subscription's own tail check
    # The membership row goes without its member.left event (a lost hint), then the channel
    # layer tells the connection it may have missed events: the re-read notices.
    await database_sync_to_async(Member.objects.filter(conversation_id=c.id, user_id="bob").delete)()
    await get_channel_layer().group_send(events.user_group("default", "bob"), {"type": "aiim.resync"})
    error = await recv(bob)
    assert error["type"] == "error" and error["code"] == "forbidden" and error["conversation_id"] == c.id
    await send_db(c.id)
    await bob.receive_nothing(timeout=0.2)


# --- subscribes sent together (a reconnect storm) share one read -----------------------


async def _frames_until_subscribed(comm) -> tuple[dict, list[dict]]:
    """The subscribe answer and whatever came before it (must be nothing)."""
    before = []
    frame = await recv(comm)
    while frame["type"] == "event":
        before.append(frame)
        frame = await recv(comm)
    return frame, before


async def _seqs(comm, conversation_id: str, until_seq: int) -> list[int]:
    got: list[int] = []
    while not got or got[-1] < until_seq:
        event = data(await recv(comm))
        if event["event"] == "message.created" and event["conversation_id"] == conversation_id:
            got.append(event["message"]["seq"])
    return got


async def test_subscribes_sent_together_share_a_read_and_keep_replay_then_live_order(ws, conv):
    members = [f"u{i}" for i in range(6)]
    convs = [await conv("alice", members) for _ in range(2)]
    for c in convs:
        for i in range(6):
            await send_db(c.id, content=f"old{i}")
    conns = [(c, await ws(u), since) for c in convs for u, since in zip(members, (0, 2, 3, 5, 6, 4))]
    reads_before = reads.get_reads().snapshots.batches
    for c, comm, since in conns:
        await comm.send_json_to({"type": "subscribe", "conversation_id": c.id, "since_seq": since})
    # Live messages commit while the batch is read: each connection still gets its replay,
    # then every live message, in order and once.
    live = asyncio.gather(*(send_db(c.id, content="live") for c in convs for _ in range(3)))
    for c, comm, since in conns:
        reply, before = await _frames_until_subscribed(comm)
        assert reply["type"] == "subscribed" and before == [], (reply, before)
        assert reply["last_seq"] >= 6
    await live
    for c, comm, since in conns:
        assert await _seqs(comm, c.id, 9) == list(range(since + 1, 10))
    assert reads.get_reads().snapshots.batches - reads_before <= 2  # 12 subscribes
    for _, comm, _ in conns:
        await comm.receive_nothing(timeout=0.1)


async def test_a_subscribe_to_a_group_redis_has_confirmed_skips_the_tail_check(ws, conv, settings):
    """The tail check closes the window before Redis runs the process's SUBSCRIBE; once Redis
    has confirmed the group (pub/sub layer only), a later subscriber has no such window."""
    c = await conv("alice", ("bob",))
    await send_db(c.id)
    first = await ws("alice")
    assert (await request(first, {"type": "subscribe", "conversation_id": c.id}))["type"] == "subscribed"
    confirmed = getattr(get_hub().layer, "group_confirmed", None)
    deadline = time.monotonic() + 2
    while confirmed is not None and not confirmed(conversation_group("default", c.id)) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    await asyncio.sleep(3 * settings.WS_GAP_WAIT_MS / 1000)  # the first one's tail check is done
    before = reads.get_reads().loads.batches
    second = await ws("bob")
    assert (await request(second, {"type": "subscribe", "conversation_id": c.id}))["type"] == "subscribed"
    await asyncio.sleep(3 * settings.WS_GAP_WAIT_MS / 1000)
    assert reads.get_reads().loads.batches - before == (0 if confirmed is not None else 1)
    # Still live: a message sent now reaches the second subscriber.
    await send_db(c.id, content="after")
    assert await _seqs(second, c.id, 2) == [2]


async def test_a_batch_answers_each_subscribe_as_alone_across_tenants(ws, conv):
    """In one batch: another tenant's conversation is not found like a missing one (the same
    user id is a member there), a non-member is forbidden, and neither spoils the others."""
    ours = await conv("alice", ("bob",))
    theirs = await conv("alice", ("bob",), tenant="acme")
    await send_db(ours.id)
    await send_db(theirs.id, tenant="acme")
    asks = [
        (await ws("alice"), ours.id, "subscribed"),
        (await ws("bob"), theirs.id, "not_found"),
        (await ws("carol"), ours.id, "forbidden"),
        (await ws("alice", tenant="acme"), theirs.id, "subscribed"),
        (await ws("carol"), "no-such-conversation", "not_found"),
        (await ws("bob"), "c\x00", "invalid" if connection.vendor == "postgresql" else "not_found"),
        (await ws("bob"), ours.id, "subscribed"),
    ]
    reads_before = reads.get_reads().snapshots.batches
    for comm, cid, _ in asks:
        await comm.send_json_to({"type": "subscribe", "conversation_id": cid, "since_seq": 0, "req_id": "s"})
    answers = [await recv(comm) for comm, _, _ in asks]
    assert reads.get_reads().snapshots.batches - reads_before <= 2
    for (comm, _, expected), answer in zip(asks, answers, strict=True):
        if expected == "subscribed":
            assert answer["type"] == "subscribed" and answer["last_seq"] == 1, answer
            assert data(await recv(comm))["message"]["seq"] == 1
        else:
            assert answer["type"] == "error" and answer["code"] == expected, answer
    # The foreign answer is the missing one's, field for field.
    foreign, missing = answers[1], answers[4]
    assert {k: v for k, v in foreign.items() if k != "conversation_id"} == {k: v for k, v in missing.items() if k != "conversation_id"}
    await send_db(theirs.id, tenant="acme")
    assert data(await recv(asks[3][0]))["message"]["seq"] == 2
    for comm, _, _ in asks:
        await comm.receive_nothing(timeout=0.1)


def test_live_subscription_reads_share_a_range_and_check_membership_each(make_conversation, send, django_assert_num_queries):
    c = make_conversation("alice", ("bob", "carol"))
    theirs = make_conversation("bob", ("alice",), tenant="acme")
    for _ in range(3):
        send(c, "alice", "x")
    asks = [
        reads.Load("default", "alice", c.id, 1, 2**62, 500),
        reads.Load("default", "bob", c.id, 1, 2**62, 500),
        reads.Load("default", "carol", c.id, 1, 2**62, 500),
        reads.Load("default", "dave", c.id, 1, 2**62, 500),  # not a member (a lost member.left)
        reads.Load("default", "alice", theirs.id, 0, 2**62, 500),  # another tenant's id
        reads.Load("default", "bob", c.id, 0, 2, 500),
    ]
    # memberships, two distinct ranges, the members (for statuses)
    with django_assert_num_queries(4):
        got = reads.read_loads(asks)
    assert [[r.seq for r in rows] for rows in got[:3]] == [[2, 3]] * 3
    assert isinstance(got[3], SubscriptionRevoked) and isinstance(got[4], SubscriptionRevoked)
    assert [r.seq for r in got[5]] == [1, 2]
