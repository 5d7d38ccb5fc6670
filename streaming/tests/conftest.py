"""Helpers for the streaming tests: a frame handler's caller and a real channel-layer listener."""

from __future__ import annotations

import orjson
import pytest

from aiim_project.core import events
from tests.support.layer import LayerListener


class Listener(LayerListener):
    """A channel on the real channel layer that joined a conversation's group."""

    async def next(self, timeout: float = 5.0) -> dict:
        message = await super().next(timeout)
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
        return await Listener.join(events.conversation_group(tenant, conversation_id))

    return join
