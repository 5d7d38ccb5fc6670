"""Back-pressure from fan-out to senders (aiim_project.gateway.fanout_lag), through the real
channel layer and database: write frames wait while delivery is behind, are refused (never
half-stored) when it stays behind, and go through in order once it has caught up."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from prometheus_client import REGISTRY

from aiim_project.core import events
from aiim_project.gateway import fanout_lag
from messaging.models import Message
from tests.support.communicator import TIMEOUT, ask, connect, subscribe

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def fresh_lag():
    fanout_lag.LAG.__init__()
    yield
    fanout_lag.LAG.__init__()


@pytest.fixture
async def ws():
    opened: list[WebsocketCommunicator] = []

    async def open_as(user: str) -> WebsocketCommunicator:
        comm = await connect(user)
        opened.append(comm)
        # The first answer proves the connect handler (user group, presence) has finished.
        assert await ask(comm, {"type": "ping"}) == {"type": "pong"}
        return comm

    yield open_as
    for comm in opened:
        await comm.disconnect()


async def conversation(make_conversation):
    return await database_sync_to_async(make_conversation)("alice", ("bob",))


async def stored(conversation_id: str) -> int:
    return await Message.objects.filter(conversation_id=conversation_id).acount()


def held() -> float:
    return REGISTRY.get_sample_value("aiim_ws_fanout_held_total") or 0.0


@contextlib.asynccontextmanager
async def delivery_behind():
    """Stand-in for a process delivering a backlog: a second-old event every millisecond,
    until the block ends. The set-up's own events (the conversation's member.joined) may
    still reach the hub meanwhile; their fresh readings would say "caught up" between two of
    the stand-in's, so only the stand-in's count inside the block."""
    caught_up = asyncio.Event()
    observe, backlog_of_hub = fanout_lag.LAG.observe, fanout_lag.LAG.backlog

    async def backlog() -> None:
        while not caught_up.is_set():
            observe(time.time() - 1.0)
            await asyncio.sleep(0.001)

    fanout_lag.LAG.observe = lambda committed_at: None
    # Events still queued for delivery: the reading holds even when a loaded loop lets more
    # than FRESH_FOR pass between two of the stand-in's readings.
    fanout_lag.LAG.backlog = lambda: 1
    task = asyncio.create_task(backlog())
    try:
        yield
    finally:
        caught_up.set()
        await task
        del fanout_lag.LAG.observe
        fanout_lag.LAG.backlog = backlog_of_hub


async def assert_refused_while_behind(conn, frame: dict, conversation_id: str) -> None:
    """`frame` is held while delivery stays behind, then refused, and nothing is stored."""
    async with delivery_behind():
        before = held()
        error = await ask(conn, frame)
        assert error["type"] == "error" and error["code"] == "unavailable" and error["req_id"] == frame["req_id"]
        assert held() == before + 1
        assert await stored(conversation_id) == 0  # refused before anything was written


async def test_delivered_events_set_the_lag_from_their_commit_time(ws, make_conversation):
    c = await conversation(make_conversation)
    bob = await ws("bob")
    await subscribe(bob, c.id)
    # A late copy of an event (its seq is already past, so it is not delivered again).
    late = events.build(c.id, "message.created", {"seq": 0}, seq=0)
    late["committed_at"] = time.time() - 2.0
    await events.group_send(events.conversation_group("default", c.id), late)
    deadline = time.monotonic() + TIMEOUT
    while fanout_lag.LAG.lag < 1.5 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert 1.5 < fanout_lag.LAG.lag < 10
    await bob.receive_nothing(timeout=0.1)


async def test_a_sender_is_refused_while_delivery_stays_behind_then_goes_through_in_order(ws, make_conversation, settings):
    settings.WS_FANOUT_LAG_MS, settings.WS_FANOUT_WAIT_MS = 25, 100
    c = await conversation(make_conversation)
    alice, bob = await ws("alice"), await ws("bob")
    await subscribe(bob, c.id)
    await assert_refused_while_behind(alice, {"type": "send_msg", "conversation_id": c.id, "content": "x", "req_id": "r1"}, c.id)
    await asyncio.sleep(2 * fanout_lag.FRESH_FOR)
    for n in (1, 2):
        ack = await ask(alice, {"type": "send_msg", "conversation_id": c.id, "content": f"m{n}"})
        assert ack["type"] == "ack" and ack["seq"] == n
    got = [(await bob.receive_json_from(timeout=TIMEOUT))["data"]["message"]["seq"] for _ in range(2)]
    assert got == [1, 2]


async def test_a_held_sender_is_answered_once_delivery_catches_up(ws, make_conversation, settings):
    settings.WS_FANOUT_LAG_MS, settings.WS_FANOUT_WAIT_MS = 25, 5000
    c = await conversation(make_conversation)
    alice = await ws("alice")
    async with delivery_behind():
        before = held()
        await alice.send_json_to({"type": "send_msg", "conversation_id": c.id, "content": "x"})
        await alice.receive_nothing(timeout=0.2)  # held: no ack, nothing stored yet
        assert held() == before + 1 and await stored(c.id) == 0
    ack = await alice.receive_json_from(timeout=TIMEOUT)
    assert ack["type"] == "ack" and ack["seq"] == 1 and await stored(c.id) == 1


async def test_a_stale_reading_holds_nobody(ws, make_conversation, settings):
    """Events stop arriving once the backlog is drained; the last one's lag must not stick."""
    settings.WS_FANOUT_LAG_MS, settings.WS_FANOUT_WAIT_MS = 25, 5000
    c = await conversation(make_conversation)
    alice = await ws("alice")
    fanout_lag.LAG.observe(time.time() - 5.0)
    await asyncio.sleep(2 * fanout_lag.FRESH_FOR)
    before = held()
    assert (await ask(alice, {"type": "send_msg", "conversation_id": c.id, "content": "x"}))["type"] == "ack"
    assert held() == before


async def test_zero_bound_turns_back_pressure_off(ws, make_conversation, settings):
    settings.WS_FANOUT_LAG_MS = 0
    c = await conversation(make_conversation)
    alice = await ws("alice")
    async with delivery_behind():
        assert (await ask(alice, {"type": "send_msg", "conversation_id": c.id, "content": "x"}))["type"] == "ack"


async def test_a_stream_chunk_waits_for_fanout_too(ws, make_conversation, settings):
    """A stream's chunks fan out like messages: they are held, then refused, like send_msg."""
    settings.WS_FANOUT_LAG_MS, settings.WS_FANOUT_WAIT_MS = 25, 100
    c = await conversation(make_conversation)
    alice = await ws("alice")
    frame = {"type": "stream_chunk", "conversation_id": c.id, "client_msg_id": "s1", "chunk": "hi", "req_id": "c1"}
    await assert_refused_while_behind(alice, frame, c.id)
    await asyncio.sleep(2 * fanout_lag.FRESH_FOR)
    ack = await ask(alice, {"type": "stream_chunk", "conversation_id": c.id, "client_msg_id": "s1", "chunk": "hi"})
    assert ack["type"] == "ack" and ack["chunk_index"] == 0
