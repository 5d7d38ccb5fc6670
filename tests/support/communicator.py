"""In-process WebSocket clients for the gateway tests: the real ASGI application (origin
check, JWT middleware, gateway, channel layer) through channels' WebsocketCommunicator."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

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


# --- queued frames: the gateway's runs, with a queue like Daphne's ---------------------


class _Transport:
    def __init__(self):
        self.paused, self.pauses = False, 0

    def pauseProducing(self):
        self.paused, self.pauses = True, self.pauses + 1

    def resumeProducing(self):
        self.paused = False


class _Protocol:
    """What the gateway reads of Daphne's protocol: its queue of client frames (here the
    communicator's input queue, whose `get` is the application's `receive`) and transport."""

    def __init__(self, queue):
        self.application_queue, self.transport = queue, _Transport()


def _daphne_like(app, protocols):
    async def handle_reply(send, protocol, message):
        await send(message)

    async def wrapped(scope, receive, send):
        protocols.append(_Protocol(receive.__self__))
        return await app(scope, receive, partial(handle_reply, send, protocols[-1]))

    return wrapped


async def connect_queued(user_id="alice", tenant="default", protocols=None):
    """A client whose frames queue up as in Daphne (`protocols` collects each connection's
    fake protocol, whose `transport` records pauses)."""
    protocols = [] if protocols is None else protocols
    token = mint_token(user_id=user_id, tenant=tenant)
    comm = WebsocketCommunicator(_daphne_like(application, protocols), f"/api/aiim/ws?token={token}")
    assert (await comm.connect())[0]
    return comm


async def pipeline(comm, frames):
    """Queue every frame before the consumer handles the first, then read one answer each."""
    for frame in frames:
        await comm.send_json_to(frame)  # an unbounded queue: never yields to the consumer
    return [await comm.receive_json_from(timeout=10) for _ in frames]


@dataclass
class FakeConnection:
    """What a frame handler uses of the gateway connection."""

    tenant: str = "default"
    user_id: str = "alice"
    conn_id: str = "c1"
    subscribed: list[str] = field(default_factory=list)
    rate_limit_calls: int = 0
    # What a handler asked to run after its reply (`after_reply`), for the test to run.
    after_steps: list = field(default_factory=list)

    def after_reply(self, step):
        self.after_steps.append(step)

    async def subscribe(self, conversation_id, since_seq):
        self.subscribed.append(conversation_id)
        return {"type": "subscribed", "conversation_id": conversation_id, "last_seq": 0}

    async def unsubscribe(self, conversation_id):
        self.subscribed.remove(conversation_id)

    async def rate_limit(self):
        self.rate_limit_calls += 1
