"""Where the WebSocket token comes from, and which subprotocol the handshake selects: the
`bearer, <JWT>` pair, `?token=`, or (the original AIIM's way) the bare token as the only
subprotocol, echoed back."""

from __future__ import annotations

import pytest
from channels.testing import WebsocketCommunicator

from aiim_project.asgi import application
from aiim_project.gateway.middleware import token_from_scope

TIMEOUT = 3


@pytest.mark.parametrize(
    "subprotocols, query, expected",
    [
        (["bearer", "T"], b"", ("T", "bearer")),
        (["T", "bearer"], b"token=Q", ("T", "bearer")),
        ([], b"token=Q", ("Q", None)),
        (["T"], b"", ("T", "T")),
        (["aiim.v1"], b"token=Q", ("Q", None)),  # a query token wins; nothing is echoed
        (["a", "b"], b"", ("", None)),  # several, none of them "bearer": no token
        ([], b"", ("", None)),
    ],
)
def test_token_and_selected_subprotocol(subprotocols, query, expected):
    assert token_from_scope({"subprotocols": subprotocols, "query_string": query}) == expected


@pytest.mark.django_db(transaction=True)
async def test_bare_token_subprotocol_connects_and_is_echoed(token):
    jwt = token("alice")
    comm = WebsocketCommunicator(application, "/api/aiim/ws", subprotocols=[jwt])
    connected, subprotocol = await comm.connect(timeout=TIMEOUT)
    assert connected and subprotocol == jwt
    await comm.send_json_to({"type": "ping", "req_id": "p"})
    assert await comm.receive_json_from(timeout=TIMEOUT) == {"type": "pong", "req_id": "p"}
    await comm.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_bad_bare_token_is_echoed_then_closed_4401():
    comm = WebsocketCommunicator(application, "/api/aiim/ws", subprotocols=["not.a.jwt"])
    connected, subprotocol = await comm.connect(timeout=TIMEOUT)
    assert connected and subprotocol == "not.a.jwt"
    message = await comm.receive_output(timeout=TIMEOUT)
    assert (message["type"], message["code"]) == ("websocket.close", 4401)


@pytest.mark.e2e
def test_bare_token_subprotocol_through_real_daphne(daphne, token):
    """Daphne puts the selected subprotocol in the handshake answer; the client (like a
    browser) refuses an answer that selects none of the offered ones."""
    import asyncio

    from websockets.asyncio.client import connect

    server = daphne(1)[0]
    jwt = token("alice")

    async def scenario():
        async with connect(server.ws_url, subprotocols=[jwt]) as ws:
            await ws.send('{"type": "ping", "req_id": "p"}')
            return ws.subprotocol, await asyncio.wait_for(ws.recv(), TIMEOUT)

    selected, reply = asyncio.run(scenario())
    assert selected == jwt
    assert reply == '{"type":"pong","req_id":"p"}'
