"""PostgreSQL goes away under load and comes back, with Daphne left running.

The machine's server is shared, so the fault is a TCP proxy between Daphne and PostgreSQL
that drops every connection and refuses new ones (what clients see when the database host
dies). The test process itself talks to PostgreSQL directly, to check what was stored.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field

import pytest

from aiim_project.core import events
from messaging.models import Conversation, Message
from tests.support.http import ahttp
from tests.support.layer import LayerListener
from tests.support.websocket import ws_open, ws_request, ws_until

pytestmark = [pytest.mark.redis, pytest.mark.e2e]

SENDERS = ("alice", "bob", "carol")


@dataclass
class Phase:
    acked: list[tuple[int, str, str]] = field(default_factory=list)  # (seq, message_id, client_msg_id)
    unavailable: list[float] = field(default_factory=list)  # how long each 503 took
    other: list[tuple[int, object]] = field(default_factory=list)


async def sender(user, servers, token, conversation_id, phases: dict[str, Phase], current: list[str], stop: asyncio.Event):
    rotation = itertools.cycle(servers)
    for n in itertools.count():
        if stop.is_set():
            return
        phase = phases[current[0]]
        reply = await ahttp(
            next(rotation).url, "POST", "/api/aiim/messages", token,
            {"conversation_id": conversation_id, "content": f"{user} {n}", "client_msg_id": f"{user}-{n}"},
            timeout=30,
        )
        if reply.status == 201:
            m = reply.body["message"]
            phase.acked.append((m["seq"], m["message_id"], m["client_msg_id"]))
        elif reply.status == 503 and reply.body.get("code") == "unavailable" and "retry-after" in reply.headers:
            phase.unavailable.append(reply.elapsed)
            await asyncio.sleep(0.1)
        else:
            phase.other.append((reply.status, reply.body))
            await asyncio.sleep(0.1)


async def listen(group: str, seen: list[dict], stop: asyncio.Event):
    """Subscribes to the conversation's group on the real channel layer, as the gateway
    does, and records every event published."""
    listener = await LayerListener.join(group)
    try:
        while not stop.is_set():
            try:
                seen.append(await listener.next(0.5))
            except TimeoutError:
                continue
    finally:
        await listener.leave()


def test_database_cut_and_restored_under_load(daphne, pg_proxy, make_conversation, token):
    conversation = make_conversation("alice", others=("bob", "carol"))
    servers = daphne(2, DATABASE_URL=pg_proxy.database_url, DB_POOL_TIMEOUT="2")
    phases = {name: Phase() for name in ("before", "outage", "after")}
    health: dict[str, list] = {"outage": [], "after": []}

    async def scenario():
        stop, current, seen = asyncio.Event(), ["before"], []
        listener = asyncio.create_task(listen(events.conversation_group("default", conversation.id), seen, stop))
        await asyncio.sleep(0.3)
        tasks = [
            asyncio.create_task(sender(u, servers, token(u), conversation.id, phases, current, stop)) for u in SENDERS
        ]
        await asyncio.sleep(1.5)

        pg_proxy.cut()
        current[0] = "outage"
        await asyncio.sleep(0.5)
        for server in servers:
            health["outage"].append(await ahttp(server.url, "GET", "/health"))
        await asyncio.sleep(3)

        pg_proxy.restore()
        restored_at = time.monotonic()
        current[0] = "after"
        while not (len(phases["after"].acked) >= 10 and all(
            any(c.startswith(u) for _, _, c in phases["after"].acked) for u in SENDERS
        )):
            assert time.monotonic() - restored_at < 20, "sends did not recover after the database came back"
            await asyncio.sleep(0.2)
        recovery = time.monotonic() - restored_at
        for server in servers:
            health["after"].append(await ahttp(server.url, "GET", "/health"))
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 40)
        await listener
        return seen, recovery

    seen, recovery = asyncio.run(scenario())
    before, outage, after = phases["before"], phases["outage"], phases["after"]
    print(
        f"pg cut: before {len(before.acked)} acked; outage {len(outage.unavailable)} x 503 "
        f"(slowest {max(outage.unavailable, default=0):.2f}s); recovered in {recovery:.2f}s; "
        f"after {len(after.acked)} acked, {len(after.unavailable)} x 503"
    )

    # Never a 500, never anything but success or 503 unavailable.
    for phase in phases.values():
        assert not phase.other, phase.other[:5]
    # During the outage sends fail fast with 503 (pool timeout 2 s, not a hang).
    assert outage.unavailable, "no send met the outage"
    assert max(outage.unavailable) < 8, outage.unavailable
    # /health says degraded and names the database while it is cut, ok once restored.
    for reply in health["outage"]:
        assert reply.status == 503 and reply.body["status"] == "degraded", reply.body
        assert "database" in reply.body["down"]
    for reply in health["after"]:
        assert reply.status == 200 and reply.body["status"] == "ok", reply.body

    # Nothing half-written: every acked message is stored with its seq; the conversation's
    # last_seq is a stored message's; a gap in seq only where a send got an error.
    stored = {m.id: m.seq for m in Message.objects.filter(conversation_id=conversation.id)}
    acked = [a for phase in phases.values() for a in phase.acked]
    for seq, message_id, _ in acked:
        assert stored.get(message_id) == seq
    seqs = sorted(stored.values())
    assert len(seqs) == len(set(seqs))
    assert Conversation.objects.get(id=conversation.id).last_seq == seqs[-1]
    gaps = sum(b - a - 1 for a, b in zip(seqs, seqs[1:]))
    errors = sum(len(p.unavailable) for p in phases.values())
    assert gaps <= errors, (gaps, errors)
    # No event for a message that did not commit.
    created = [e for e in seen if e.get("event") == "message.created"]
    assert created, "the listener saw no event: it was not listening"
    for e in created:
        message = json.loads(e["frame"])["data"]["message"]
        assert stored.get(message["message_id"]) == message["seq"], message


def test_first_requests_after_an_idle_outage_succeed(daphne, pg_proxy, make_conversation, token):
    """The database restarts while nobody is sending: the pool still holds connections to the
    old server. The first sends after it is back must not be handed those dead connections."""
    conversation = make_conversation("alice", others=("bob",))
    servers = daphne(2, DATABASE_URL=pg_proxy.database_url, DB_POOL_TIMEOUT="2")

    async def send_round(tag: str) -> list:
        # More concurrent sends than the pool's idle minimum, on each server.
        return await asyncio.gather(*(
            ahttp(server.url, "POST", "/api/aiim/messages", token("alice"),
                  {"conversation_id": conversation.id, "content": f"{tag} {i}", "client_msg_id": f"{tag}-{server.port}-{i}"})
            for server in servers for i in range(4)
        ))

    async def scenario():
        warm = await send_round("warm")
        pg_proxy.cut()
        await asyncio.sleep(0.5)
        pg_proxy.restore()
        return warm, await send_round("after")

    warm, after = asyncio.run(scenario())
    assert [r.status for r in warm] == [201] * len(warm)
    assert [r.status for r in after] == [201] * len(after), [(r.status, r.body) for r in after]


def test_websocket_frames_during_a_database_outage(daphne, pg_proxy, make_conversation, token):
    """A connected client keeps its socket through the outage: its frames get `unavailable`
    errors (quickly, never server_error), and the same connection works once it is over."""
    conversation = make_conversation("alice", others=("bob",))
    server = daphne(1, DATABASE_URL=pg_proxy.database_url, DB_POOL_TIMEOUT="2")[0]

    async def scenario():
        ws = await ws_open(server.ws_url, token("alice"))
        assert (await ws_request(ws, {"type": "subscribe", "conversation_id": conversation.id}))["type"] == "subscribed"
        pg_proxy.cut()
        during = []
        for frame in (
            {"type": "send_msg", "conversation_id": conversation.id, "content": "x", "client_msg_id": "m1"},
            {"type": "read", "conversation_id": conversation.id, "last_read_seq": 1},
            {"type": "subscribe", "conversation_id": conversation.id, "since_seq": 0},
        ):
            started = time.monotonic()
            during.append((await ws_request(ws, frame, timeout=15), time.monotonic() - started))
        pg_proxy.restore()
        await asyncio.sleep(0.5)
        ack = await ws_request(ws, {"type": "send_msg", "conversation_id": conversation.id, "content": "x", "client_msg_id": "m1"})
        created = await ws_until(ws, lambda f: f.get("type") == "event" and f["data"].get("event") == "message.created")
        await ws.close()
        return during, ack, created

    during, ack, created = asyncio.run(scenario())
    for answer, elapsed in during:
        assert answer["type"] == "error" and answer["code"] == "unavailable", answer
        assert elapsed < 8, elapsed
    assert ack["type"] == "ack" and ack["seq"] == 1
    assert created["data"]["message"]["seq"] == 1
