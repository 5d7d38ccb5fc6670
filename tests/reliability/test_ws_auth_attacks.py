"""Forged and expired tokens on the WebSocket, against a real Daphne configured for RS256
(an external identity provider): every one is closed with 4401 before any frame is
handled; a token that expires during the connection is closed with 4401 too."""

from __future__ import annotations

import asyncio
import time

import jwt
import pytest
from websockets.exceptions import ConnectionClosed

from tests.support.tokens import claims, hs256_with_key, unsigned
from tests.support.websocket import ws_open, ws_recv, ws_request, ws_send

pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")]


async def close_code(ws_url: str, token: str, **kwargs) -> int | None:
    """Connect, try a frame, and return the close code (None if the socket stayed open)."""
    ws = await ws_open(ws_url, token, **kwargs)
    try:
        await ws_send(ws, {"type": "ping", "req_id": "p"})
        while True:
            frame = await ws_recv(ws, 5)
            if frame.get("type") == "pong":
                await ws.close()
                return None
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None


def test_forged_tokens_are_closed_with_4401(daphne, rsa_keys, settings):
    private, public = rsa_keys
    server = daphne(1, JWT_ALGORITHM="RS256", JWT_PUBLIC_KEY=public)[0]
    now = int(time.time())
    attacks = {
        "alg-none": unsigned({"alg": "none", "typ": "JWT"}, claims()),
        "hs256-with-public-key": hs256_with_key(claims(), public.encode()),
        "hs256-with-shared-secret": jwt.encode(claims(), settings.JWT_SECRET, algorithm="HS256"),
        "expired": jwt.encode(claims(exp=now - 5), private, algorithm="RS256"),
        "not-yet-valid": jwt.encode(claims(nbf=now + 600), private, algorithm="RS256"),
        "missing-sub": jwt.encode({k: v for k, v in claims().items() if k != "sub"}, private, algorithm="RS256"),
        "garbage": "not.a.jwt",
        "empty": "",
    }

    async def scenario():
        results = {name: await close_code(server.ws_url, tok) for name, tok in attacks.items()}
        # The controls: a valid RS256 token works, by query string and by subprotocol.
        results["valid"] = await close_code(server.ws_url, jwt.encode(claims(), private, algorithm="RS256"))
        results["valid-subprotocol"] = await close_code(
            server.ws_url, "", subprotocols=["bearer", jwt.encode(claims(), private, algorithm="RS256")]
        )
        return results

    results = asyncio.run(scenario())
    assert results.pop("valid") is None and results.pop("valid-subprotocol") is None
    assert results == {name: 4401 for name in attacks}


def test_a_token_that_expires_during_the_connection_is_closed_with_4401(daphne, token):
    server = daphne(1)[0]

    async def scenario():
        ws = await ws_open(server.ws_url, token("alice", ttl=2))
        assert (await ws_request(ws, {"type": "ping"}))["type"] == "pong"
        try:
            while True:
                await ws_recv(ws, 6)
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None

    assert asyncio.run(scenario()) == 4401
