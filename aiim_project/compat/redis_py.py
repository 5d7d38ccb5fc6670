"""redis-py: the pub/sub replies a connection has already read from its socket, parsed without
the wrapper `PubSub.get_message` puts around every read (docs/internals.md,
"compat/redis_py.py")."""

from __future__ import annotations

import asyncio
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError

# A reply that has started arriving is normally complete within microseconds; one that stalls
# this long means the connection is gone.
PARTIAL_REPLY_TIMEOUT = 5.0


async def read_buffered(pubsub: Any, limit: int) -> tuple[list[Any], RedisConnectionError | None]:
    """Up to `limit` raw replies already buffered on `pubsub`'s connection, in order, and the
    error that ended the reading, if the connection failed meanwhile.

    Each `get_message` costs a retry wrapper, a health check and a timeout scope per reply
    (~10-20 us); a burst of events arrives in one socket read, so the rest of it is parsed
    here (bench/RESULTS.md, issue 21 target 1). A failed connection is disconnected, so the
    next `get_message` reconnects and re-subscribes as it always does; the replies read
    before the failure are still returned."""
    conn = pubsub.connection
    if conn is None or not conn.is_connected:
        return [], None
    parser = conn._parser
    if not await parser.can_read():
        return [], None
    replies: list[Any] = []
    try:
        async with asyncio.timeout(PARTIAL_REPLY_TIMEOUT):
            while len(replies) < limit and await parser.can_read():
                replies.append(await conn._read_response_from_parser(push_request=True))
    except (OSError, RedisConnectionError, TimeoutError) as exc:
        await conn.disconnect(nowait=True)
        return replies, RedisConnectionError(f"pub/sub connection lost while reading: {type(exc).__name__}")
    return replies, None
