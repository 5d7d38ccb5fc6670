"""Twisted: a transport's write buffer, read and bypassed.

Daphne writes every frame to the Twisted transport at once; to cut off a client that stops
reading (4413), the gateway measures what the transport still holds, and to save an epoll
round per frame it writes straight to an idle socket. Both read `FileDescriptor` fields
that Twisted does not document.
"""

from __future__ import annotations

from typing import Any


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
