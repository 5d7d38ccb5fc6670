"""A WebSocket client over a real socket (the `websockets` library), for tests against a
running Daphne process: open with a token, send and receive JSON frames with a bound wait."""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

from websockets.asyncio.client import ClientConnection, connect


async def ws_open(ws_url: str, token: str, **kwargs: Any) -> ClientConnection:
    kwargs.setdefault("open_timeout", 10)
    kwargs.setdefault("max_size", 2**24)
    return await connect(f"{ws_url}?token={token}", **kwargs)


async def ws_send(ws: ClientConnection, frame: dict) -> None:
    await ws.send(json.dumps(frame))


async def ws_recv(ws: ClientConnection, timeout: float = 10.0) -> dict:
    """The next frame; a stuck server fails the test instead of hanging the suite."""
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def ws_until(ws: ClientConnection, predicate, timeout: float = 10.0) -> dict:
    """The first frame matching `predicate`; the others are skipped."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no matching frame")
        frame = await ws_recv(ws, remaining)
        if predicate(frame):
            return frame


async def ws_request(ws: ClientConnection, frame: dict, timeout: float = 10.0) -> dict:
    """Send a frame with a fresh req_id and return the ack or error that answers it."""
    req_id = frame.setdefault("req_id", os.urandom(6).hex())
    await ws_send(ws, frame)
    return await ws_until(ws, lambda f: f.get("req_id") == req_id and f.get("type") in ("ack", "error", "subscribed", "unsubscribed", "pong"), timeout)
