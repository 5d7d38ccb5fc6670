"""Daphne: replaces `daphne.http_protocol.WebRequest` to set Twisted's `_parsePOSTFormSubmission`
off, and reaches the protocol's `application_queue` through the ASGI `send`
(docs/internals.md, "compat/daphne.py").
"""

from __future__ import annotations

from collections.abc import Callable
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
    """Daphne's queue of the client frames it has read for the connection (its `get` is the
    application's `receive`); free to take from while the consumer handles a message."""
    return getattr(protocol, "application_queue", None)


def inbound_backlog(protocol: Any) -> int:
    """Client frames Daphne has read and queued that the consumer has not handled yet."""
    queue = inbound_queue(protocol)
    return queue.qsize() if queue is not None else 0


def redact_access_log(redact: Callable[[str], str]) -> None:
    """Daphne's access log (on at its default verbosity) prints each request's URI with its
    query string: wrap `AccessLogGenerator.__call__` so every path goes through `redact`."""
    from daphne import access

    generator = access.AccessLogGenerator
    if getattr(generator, "_aiim_redacting", False):
        return
    original = generator.__call__

    def __call__(self, protocol, action, details):
        if isinstance(details.get("path"), str):
            details = {**details, "path": redact(details["path"])}
        return original(self, protocol, action, details)

    generator.__call__ = __call__
    generator._aiim_redacting = True
