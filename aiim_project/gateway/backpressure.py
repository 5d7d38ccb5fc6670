"""What the server holds for a connection, both ways.

Daphne has no flow control towards the application. Outbound, it writes every frame to the
Twisted transport at once, so a client that stops reading would make the server buffer
without bound. Inbound, it reads whatever the client sends and queues every frame for the
consumer, so a client sending faster than its frames are handled grows that queue and takes
the event loop from everyone else. The ASGI `send` Daphne hands the application is
`partial(server.handle_reply, protocol)`, which leads to the protocol, its transport and its
queue; under another server (or the test communicator) there is nothing to measure and the
limits are simply not enforced.
"""

from __future__ import annotations

from typing import Any


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


def buffered_bytes(transport: Any) -> int:
    """Bytes written but not yet taken by the kernel (twisted's FileDescriptor buffers)."""
    try:
        return len(transport.dataBuffer) - transport.offset + transport._tempDataLen
    except (AttributeError, TypeError):
        return 0


def write_now(transport: Any, data: bytes) -> None:
    """`transport.write`, but straight to the socket when nothing is buffered before it.

    Twisted's write only buffers and registers the socket for writing; the loop then sends
    on its next pass and unregisters it: two epoll changes and a pass per frame, for a frame
    the kernel would have taken at once. What the socket does not take now is buffered as
    usual, behind nothing (the buffer was empty), so the byte order is unchanged. TLS
    transports and a transport with anything buffered take the ordinary path.
    """
    try:
        idle = (
            transport.connected
            and not transport._writeDisconnected
            and not getattr(transport, "TLS", False)
            and not transport._tempDataBuffer
            and len(transport.dataBuffer) == transport.offset
        )
    except AttributeError:
        idle = False
    if idle:
        sent = transport.writeSomeData(data)
        if isinstance(sent, int) and sent >= 0:
            if sent == len(data):
                return
            data = data[sent:]
    transport.write(data)
