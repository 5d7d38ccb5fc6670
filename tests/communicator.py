"""In-process WebSocket clients for the gateway tests: the real ASGI application (origin
check, JWT middleware, gateway, channel layer) through channels' WebsocketCommunicator."""

from __future__ import annotations

from channels.testing import WebsocketCommunicator

from aiim_project.asgi import application
from aiim_project.core.auth import mint_token

TIMEOUT = 5


async def connect(user_id: str = "alice", tenant: str = "default") -> WebsocketCommunicator:
    comm = WebsocketCommunicator(application, f"/api/aiim/ws?token={mint_token(user_id=user_id, tenant=tenant)}")
    connected, _ = await comm.connect()
    assert connected
    return comm


async def ask(comm: WebsocketCommunicator, frame: dict) -> dict:
    """Send one frame and return the next frame that arrives."""
    await comm.send_json_to(frame)
    return await comm.receive_json_from(timeout=TIMEOUT)


async def subscribe(comm: WebsocketCommunicator, conversation_id: str, **kw) -> dict:
    reply = await ask(comm, {"type": "subscribe", "conversation_id": conversation_id, **kw})
    assert reply["type"] == "subscribed", reply
    return reply
