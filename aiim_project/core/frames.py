"""The interface every app's WebSocket frame handlers implement; `aiim_project.wiring` merges
each app's `FRAMES` into the gateway's table (docs/architecture.md, "Runtime details of the shared base").
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

    def is_subscribed(self, conversation_id: str) -> bool: ...

    def after_reply(self, step: Callable[[], object]) -> None:
        """Call `step` (a function; an awaitable it returns is awaited) once the reply of the
        frame being handled has been sent; not called if the handler raises."""

    async def rate_limit(self) -> None:
        """Count one write against RATE_LIMIT_PER_SEC, raising RateLimited when over it: for
        a frame that counts only sometimes (a stream's first chunk), where
        `FrameSpec.rate_limited` would count them all."""


Handler = Callable[[Connection, dict[str, Any]], Awaitable[dict[str, Any] | None]]
# Handles a run of frames at once: returns the replies of the frames it handled, a prefix
# of the run (possibly none); the gateway passes the rest to `handler`, one at a time.
BatchHandler = Callable[[Connection, list[dict[str, Any]]], Awaitable[list[dict[str, Any]]]]


@dataclass(frozen=True)
class FrameSpec:
    handler: Handler
    # Counted against RATE_LIMIT_PER_SEC (writes that create work for others).
    rate_limited: bool = False
    # Creates events for others: waits while this process's fan-out lags (see the
    # gateway's fanout_lag), so delivery stays close behind acceptance.
    waits_for_fanout: bool = False
    # Required fields and their types, checked by the gateway before the handler runs.
    required: dict[str, type | tuple[type, ...]] = field(default_factory=dict)
    # Optional: queued frames agreeing on `batch_key` go to `batch` together, each still
    # answered in order (docs/architecture.md, "Runtime details of the shared base").
    batch: BatchHandler | None = None
    batch_key: tuple[str, ...] = ()
