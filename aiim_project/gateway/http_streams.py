"""Sending a long-lived streaming response (Server-Sent Events) from the event loop.

Two things Django's `send_response` does not do for a stream that can stay open for hours:

* Notice the client leaving. `http.disconnect` is awaited beside the send; when it comes,
  the send (and with it the response's async iterator, which leaves the hub) is cancelled
  at once instead of waiting for Daphne's application close timeout.
* Cut off a client that stops reading, as the WebSocket gateway does (4413): Daphne writes
  every body message to the Twisted transport at once, so a client that does not read
  would make the server buffer without bound. Past WS_SEND_BUFFER_BYTES unsent, the
  connection is aborted; the client resumes from its last event id (nothing is lost: the
  database has it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from django.conf import settings

from aiim_project.compat import daphne, twisted
from aiim_project.core.metrics import SLOW_STREAM_CLIENTS

logger = logging.getLogger("aiim.http")



class SlowConsumer(Exception):
    pass


def guarded(send):
    """`send`, aborting the connection once its unsent bytes pass WS_SEND_BUFFER_BYTES
    (under Daphne; elsewhere there is no transport to measure and `send` is returned)."""
    transport = getattr(daphne.protocol_of(send), "transport", None)
    if transport is None:
        return send
    limit = settings.WS_SEND_BUFFER_BYTES

    async def send_checked(message: dict) -> None:
        await send(message)
        if message.get("type") == "http.response.body" and twisted.buffered_bytes(transport) > limit:
            logger.warning("http stream cut off: client not reading, send buffer over %d bytes", limit)
            SLOW_STREAM_CLIENTS.inc()
            transport.abortConnection()
            raise SlowConsumer()

    return send_checked


async def _disconnected(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def send_stream(send_response, response, receive, send) -> None:
    """`send_response(response, send)` until it ends or the client goes, whichever is first."""
    sender = asyncio.ensure_future(send_response(response, guarded(send)))
    listener = asyncio.ensure_future(_disconnected(receive))
    await asyncio.wait({sender, listener}, return_when=asyncio.FIRST_COMPLETED)
    for task in (sender, listener):
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, SlowConsumer):
            await task
