"""autobahn: whether a WebSocket frame can be written around the protocol; reads the private
`_perMessageCompress`, `send_queue`, `send_state`, `state` (docs/internals.md).
"""

from __future__ import annotations

from typing import Any


def is_open(protocol: Any) -> bool:
    return protocol.state == protocol.STATE_OPEN


def idle(protocol: Any) -> bool:
    """Nothing of autobahn's is in progress: a whole frame may go to the transport now."""
    return protocol._perMessageCompress is None and not protocol.send_queue and protocol.send_state == protocol.SEND_STATE_GROUND


def can_send_directly(protocol: Any) -> bool:
    """The protocol is autobahn's (it has `sendMessage`) and sits on a transport."""
    return getattr(protocol, "transport", None) is not None and hasattr(protocol, "sendMessage")
