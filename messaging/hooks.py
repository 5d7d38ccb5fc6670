"""Hooks other apps register to react to stored messages, so messaging never imports them.

A hook runs inside the transaction that stored the messages, after they are inserted: what
it writes commits (or rolls back) with them. It must be quick and must not raise for a
message it does not care about. Registered once at start-up (an app's `ready`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .models import Message

MessagesStored = Callable[[str, Sequence[Message]], None]

_messages_stored: list[MessagesStored] = []


def on_messages_stored(hook: MessagesStored) -> MessagesStored:
    if hook not in _messages_stored:
        _messages_stored.append(hook)
    return hook


def messages_stored(tenant: str, messages: Sequence[Message]) -> None:
    """Called by the send services with the new messages of one conversation."""
    for hook in _messages_stored:
        hook(tenant, messages)
