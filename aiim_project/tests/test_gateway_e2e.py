"""End to end: two real Daphne processes sharing PostgreSQL and Redis, real WebSocket clients.

Three senders push 100 messages each, concurrently, into one conversation; every
subscriber, on either process, must see exactly the acknowledged seqs, in increasing
order, each once; also across a reconnect that resumes with since_seq.
"""

from __future__ import annotations

import asyncio

import orjson
import pytest
from channels.db import database_sync_to_async
from websockets.asyncio.client import connect

from aiim_project.core.auth import mint_token
from tests.support.ports import free_port
from tests.support.websocket import ws_recv

pytestmark = [pytest.mark.redis, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SENDERS = ("alice", "bob", "carol")
PER_SENDER = 100
DEADLINE = 60


def url(server, user: str) -> str:
    return f"{server.ws_url}?token={mint_token(user_id=user)}"


async def next_frame(ws) -> dict:
    return await ws_recv(ws, DEADLINE)


async def subscribe(ws, conversation_id: str, **kw) -> dict:
    await ws.send(orjson.dumps({"type": "subscribe", "conversation_id": conversation_id, **kw}).decode())
    reply = await next_frame(ws)
    assert reply["type"] == "subscribed", reply
    return reply


async def send_all(server, user: str, conversation_id: str) -> list[int]:
    """Pipeline PER_SENDER send_msg frames and return the acknowledged seqs."""
    async with connect(url(server, user)) as ws:
        for i in range(PER_SENDER):
            frame = {"type": "send_msg", "conversation_id": conversation_id, "content": f"{user}-{i}", "req_id": str(i)}
            await ws.send(orjson.dumps(frame).decode())
        seqs = []
        while len(seqs) < PER_SENDER:
            frame = await next_frame(ws)
            if frame["type"] == "ack":
                seqs.append(frame["seq"])
            else:
                assert frame["type"] == "event", frame
        return seqs


async def collect(ws, want: int, seen: list[int]) -> None:
    while len(seen) < want:
        frame = await next_frame(ws)
        if frame["type"] == "event" and frame["data"]["event"] == "message.created":
            seen.append(frame["data"]["message"]["seq"])


@pytest.fixture
def group(make_conversation):
    async def make(subscribers):
        return await database_sync_to_async(make_conversation)("alice", [*SENDERS[1:], *subscribers])

    return make


async def test_concurrent_senders_every_subscriber_on_either_process_sees_acked_seqs_in_order(daphne, group):
    servers = daphne(2)
    subscribers = [("s0", servers[0]), ("s1", servers[1]), ("s2", servers[0]), ("s3", servers[1])]
    conversation = await group([name for name, _ in subscribers])
    sockets = [await connect(url(server, name)) for name, server in subscribers]
    try:
        for ws in sockets:
            await subscribe(ws, conversation.id)
        total = len(SENDERS) * PER_SENDER
        seen: list[list[int]] = [[] for _ in sockets]
        collectors = [asyncio.create_task(collect(ws, total, s)) for ws, s in zip(sockets, seen, strict=True)]
        acked = await asyncio.gather(*(send_all(servers[i % 2], user, conversation.id) for i, user in enumerate(SENDERS)))
        await asyncio.wait_for(asyncio.gather(*collectors), DEADLINE)
    finally:
        for ws in sockets:
            await ws.close()
    expected = sorted(seq for seqs in acked for seq in seqs)
    assert len(expected) == len(set(expected)) == total
    for got in seen:
        assert got == expected


async def test_reconnect_with_since_seq_resumes_without_gap_or_duplicate(daphne, group):
    servers = daphne(2)
    conversation = await group(["s0", "s1"])
    steady = await connect(url(servers[1], "s1"))
    mover = await connect(url(servers[0], "s0"))
    total = len(SENDERS) * PER_SENDER
    try:
        await subscribe(steady, conversation.id)
        await subscribe(mover, conversation.id)
        steady_seen: list[int] = []
        steady_task = asyncio.create_task(collect(steady, total, steady_seen))
        senders = asyncio.gather(*(send_all(servers[i % 2], user, conversation.id) for i, user in enumerate(SENDERS)))
        before: list[int] = []
        await collect(mover, total // 3, before)
        await mover.close()  # drop mid-flow, reconnect to the OTHER process
        await asyncio.sleep(0.2)
        mover = await connect(url(servers[1], "s0"))
        reply = await subscribe(mover, conversation.id, since_seq=before[-1])
        assert "recovered" not in reply
        after: list[int] = []
        acked = await senders
        await collect(mover, total - len(before), after)
        await asyncio.wait_for(steady_task, DEADLINE)
    finally:
        await steady.close()
        await mover.close()
    expected = sorted(seq for seqs in acked for seq in seqs)
    assert before + after == expected
    assert steady_seen == expected


async def test_channel_layer_down_at_connect_closes_1011(daphne):
    from websockets.exceptions import ConnectionClosed

    server = daphne(1, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")[0]
    async with connect(url(server, "alice")) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 15)
    assert closed.value.rcvd.code == 1011
