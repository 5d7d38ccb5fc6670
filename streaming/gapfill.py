"""The gateway's chunk gap loader (`load_chunks` of `OrderedDelivery`, handed over by
`aiim_project.wiring`): a subscription that missed chunk events gets exactly the missing
chunks, from its next expected index to the current end, as one `message.stream_chunk` frame."""

from __future__ import annotations

from typing import Any

from aiim_project.core.db import in_worker
from messaging.models import StreamState

from . import selectors
from .rendering import chunk_frame


def load_chunks(message_id: str, from_index: int) -> dict[str, Any] | None:
    rows = selectors.stream_chunks_from(message_id=message_id, from_index=from_index)
    if not rows or rows[0].index != from_index:
        return None
    message = rows[0].message
    first, last = rows[0].index, rows[-1].index
    stream_end = message.stream_state == StreamState.COMPLETED and last == message.stream_chunk_count - 1
    frame = chunk_frame(message, first=first, last=last, delta="".join(r.text for r in rows), stream_end=stream_end)
    return {"frame": frame, "chunk_index": first, "last_chunk_index": last}


async def chunk_gap_loader(message_id: str, from_index: int) -> dict[str, Any] | None:
    return await in_worker(load_chunks)(message_id, from_index)
