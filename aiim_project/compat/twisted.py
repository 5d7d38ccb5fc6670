"""Twisted: a transport's write buffer, read (`dataBuffer`, `offset`, `_tempDataLen`) and bypassed
(`writeSomeData`) (docs/internals.md, "compat/twisted.py").
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
    """`transport.write`, but straight to the socket when nothing is buffered before it: saves
    two epoll changes and a loop pass per frame; byte order unchanged (docs/internals.md)."""
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
