"""How many bytes the server still holds for a connection's socket.

Daphne writes every frame to the Twisted transport at once and never pushes back on the
application, so a client that stops reading would make the server buffer without bound. The
ASGI `send` Daphne hands the application is `partial(server.handle_reply, protocol)`, which
leads to the transport; under another server (or the test communicator) there is nothing to
measure and the limit is simply not enforced.
"""

from __future__ import annotations

from typing import Any


def transport_of(send: Any) -> Any | None:
    for arg in getattr(send, "args", ()):
        transport = getattr(arg, "transport", None)
        if transport is not None:
            return transport
    return None


def buffered_bytes(transport: Any) -> int:
    """Bytes written but not yet taken by the kernel (twisted's FileDescriptor buffers)."""
    try:
        return len(transport.dataBuffer) - transport.offset + transport._tempDataLen
    except (AttributeError, TypeError):
        return 0
