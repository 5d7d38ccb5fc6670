"""Helpers for the streaming tests: a frame handler's caller and a real channel-layer listener."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from channels.layers import get_channel_layer

from aiim_project.core import events


class Listener:
    """A channel on the real channel layer that joined a conversation's group."""

    def __init__(self, layer, channel: str):
        self.layer, self.channel = layer, channel

    async def next(self, timeout: float = 5.0) -> dict:
        message = await asyncio.wait_for(self.layer.receive(self.channel), timeout)
        message["data"] = orjson.loads(message["frame"])["data"]
        return message

    async def until(self, predicate, timeout: float = 10.0) -> list[dict]:
        """Every event up to and including the first that satisfies predicate."""
        seen = []
        while True:
            seen.append(await self.next(timeout))
            if predicate(seen[-1]):
                return seen


@pytest.fixture
def listen():
    async def join(conversation_id: str, tenant: str = "default") -> Listener:
        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add(events.conversation_group(tenant, conversation_id), channel)
        return Listener(layer, channel)

    return join
