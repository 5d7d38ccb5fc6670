"""Daphne's HTTP requests without Twisted's parse of form bodies.

Twisted's `Request` parses a POST body that says it is `multipart/form-data` or
`application/x-www-form-urlencoded` into `request.args` before the application runs, and to
find out it parses the Content-Type of every POST with the `email` package. Daphne never
reads `args`: it hands the raw body to the application, where Django parses it if a view asks.
That parse was ~5% of a REST post's CPU (bench/RESULTS.md), holds a second copy of a form
upload, and answers a malformed multipart body with Twisted's bare 400 instead of the API's
JSON error.

Twisted has the switch (`Request(parsePOSTFormSubmission=False)`), but Daphne builds its
requests itself: `HTTPFactory.buildProtocol` sets `requestFactory` to the `WebRequest` of
`daphne.http_protocol`, looked up for every connection. `install` puts this subclass there.
It sets the attribute the switch sets rather than passing the keyword, so a Twisted without
the switch keeps working as before (`test_daphne_requests` fails on such an upgrade).

2. Daphne has no flow control towards the application: it reads whatever a client sends and
queues every frame for the consumer. The ASGI `send` Daphne hands the application is
`partial(server.handle_reply, protocol)`, which leads to the protocol (autobahn's), its
transport and that queue; under another server (or the test communicator) there is nothing
to measure and the gateway's limits are simply not enforced.
"""

from __future__ import annotations

from typing import Any

from daphne import http_protocol


class WebRequest(http_protocol.WebRequest):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._parsePOSTFormSubmission = False


def install() -> None:
    http_protocol.WebRequest = WebRequest


def protocol_of(send: Any) -> Any | None:
    for arg in getattr(send, "args", ()):
        if getattr(arg, "transport", None) is not None:
            return arg
    return None


def inbound_queue(protocol: Any) -> Any | None:
    """Daphne's queue of the client frames it has read for the connection (an asyncio.Queue
    whose `get` is the application's `receive`). While the consumer handles a message,
    Channels has no `get` pending on it, so the consumer may take the next ones itself."""
    return getattr(protocol, "application_queue", None)


def inbound_backlog(protocol: Any) -> int:
    """Client frames Daphne has read and queued that the consumer has not handled yet."""
    queue = inbound_queue(protocol)
    return queue.qsize() if queue is not None else 0
