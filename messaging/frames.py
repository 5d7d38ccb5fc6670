"""The interface every app's WebSocket frame handlers implement, and messaging's own table.

Each app exposes `FRAMES: dict[str, FrameSpec]` in its `frames.py`; the gateway
(`aiim_project.gateway`) merges them into one table at start-up, so adding a frame never
touches the gateway. A handler gets the caller and the parsed frame, calls one service
(through `database_sync_to_async` or the async ORM), and returns the ack frame (or None for
no answer). It raises `messaging.errors.AiimError` for a bad frame; the gateway renders that
as an error frame with the frame's `req_id` and keeps the connection open.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


class Connection(Protocol):
    """What a frame handler may use of the gateway connection."""

    tenant: str
    user_id: str
    conn_id: str

    async def subscribe(self, conversation_id: str, since_seq: int | None) -> dict[str, Any]: ...

    async def unsubscribe(self, conversation_id: str) -> None: ...


Handler = Callable[[Connection, dict[str, Any]], Awaitable[dict[str, Any] | None]]


@dataclass(frozen=True)
class FrameSpec:
    handler: Handler
    # Counted against RATE_LIMIT_PER_SEC (writes that create work for others).
    rate_limited: bool = False
    # Required fields and their types, checked by the gateway before the handler runs.
    required: dict[str, type | tuple[type, ...]] = field(default_factory=dict)


FRAMES: dict[str, FrameSpec] = {}
