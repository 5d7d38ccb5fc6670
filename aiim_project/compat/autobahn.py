"""autobahn: whether a WebSocket frame can be written around the protocol; reads the private
`_perMessageCompress`, `send_queue`, `send_state`, `state`. And `lazy_debug_formatting`
replaces the module-level `pformat` of `autobahn.websocket.protocol` (docs/internals.md).
"""

from __future__ import annotations

import pprint
from typing import Any


def is_open(protocol: Any) -> bool:
    return protocol.state == protocol.STATE_OPEN


def idle(protocol: Any) -> bool:
    """Nothing of autobahn's is in progress: a whole frame may go to the transport now."""
    return protocol._perMessageCompress is None and not protocol.send_queue and protocol.send_state == protocol.SEND_STATE_GROUND


def can_send_directly(protocol: Any) -> bool:
    """The protocol is autobahn's (it has `sendMessage`) and sits on a transport."""
    return getattr(protocol, "transport", None) is not None and hasattr(protocol, "sendMessage")


class _Lazy:
    """Formats only if a debug log line is actually written."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __str__(self) -> str:
        return pprint.pformat(self.value)

    __repr__ = __str__


def lazy_debug_formatting() -> None:
    """Every connection's `_connectionMade` pretty-prints its ~40 options for a debug log line
    that is off: that pformat was 14% of the server's CPU in a reconnect storm."""
    from autobahn.websocket import protocol

    protocol.pformat = _Lazy
