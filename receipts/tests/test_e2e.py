"""End to end: read sync across two real Daphne processes sharing PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

import orjson
import pytest
from channels.db import database_sync_to_async
from websockets.asyncio.client import connect

from aiim_project.core.auth import mint_token
from tests.support.ports import free_port
from tests.support.websocket import ws_recv

pytestmark = [pytest.mark.redis, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def unread_over_rest(server, user: str, conversation_id: str) -> int:
    request = urllib.request.Request(
        f"{server.url}/api/aiim/conversations/{conversation_id}", headers={"Authorization": f"Bearer {mint_token(user_id=user)}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["unread_count"]


async def next_frame(ws) -> dict:
    return await ws_recv(ws, 10)


async def test_phone_on_one_process_reads_laptop_on_the_other_follows(daphne, make_conversation, send):
    a, b = daphne(2)

    def setup():
        conv = make_conversation("alice", ["bob"])
        return conv, [send(conv) for _ in range(5)]

    conv, messages = await database_sync_to_async(setup)()
    token = mint_token(user_id="bob")
    async with connect(f"{a.ws_url}?token={token}") as phone, connect(f"{b.ws_url}?token={token}") as laptop, connect(
        f"{b.ws_url}?token={mint_token(user_id='alice')}"
    ) as alice:
        await alice.send(orjson.dumps({"type": "subscribe", "conversation_id": conv.id}).decode())
        assert (await next_frame(alice))["type"] == "subscribed"
        assert await asyncio.to_thread(unread_over_rest, b, "bob", conv.id) == 5

        await phone.send(orjson.dumps({"type": "read", "conversation_id": conv.id, "message_id": messages[3].id}).decode())
        assert (await next_frame(phone))["type"] == "ack"

        expected = {
            "event": "receipt.read",
            "conversation_id": conv.id,
            "user_id": "bob",
            "last_read_seq": 4,
            "last_read_message_id": messages[3].id,
            "unread_count": 1,
        }
        assert (await next_frame(laptop))["data"] == expected
        assert (await next_frame(alice))["data"] == expected
        # The laptop's view of unread, from either process, matches the phone's read.
        assert await asyncio.to_thread(unread_over_rest, b, "bob", conv.id) == 1
        assert await asyncio.to_thread(unread_over_rest, a, "bob", conv.id) == 1


async def test_database_down_is_503_over_rest_and_unavailable_over_ws(daphne):
    (server,) = daphne(DATABASE_URL=f"postgres://postgres@127.0.0.1:{free_port()}/aiim", DB_POOL_TIMEOUT="0.5")
    token = mint_token(user_id="bob")
    request = urllib.request.Request(
        f"{server.url}/api/aiim/receipts/read",
        data=json.dumps({"conversation_id": "c1", "last_read_seq": 1}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        await asyncio.to_thread(urllib.request.urlopen, request, timeout=30)
    assert refused.value.code == 503
    assert refused.value.headers["Retry-After"]
    assert json.loads(refused.value.read())["code"] == "unavailable"

    async with connect(f"{server.ws_url}?token={token}") as ws:
        await ws.send(orjson.dumps({"type": "delivered", "conversation_id": "c1", "up_to_seq": 1, "req_id": "d"}).decode())
        reply = orjson.loads(await asyncio.wait_for(ws.recv(), 30))
        assert (reply["type"], reply["code"], reply["req_id"]) == ("error", "unavailable", "d")
        # The connection survives the outage.
        await ws.send('{"type":"ping"}')
        assert orjson.loads(await asyncio.wait_for(ws.recv(), 30)) == {"type": "pong"}
