"""Reads of the front-end streams. Every read is scoped by tenant and membership."""

from __future__ import annotations

from messaging.errors import NotFound
from messaging.models import Message
from messaging.selectors import conversation_for_member


def message_for_member(*, tenant: str, user_id: str, conversation_id: str, message_id: str) -> Message:
    """The message if `user_id` is a member of its conversation: 404 for a missing or another
    tenant's conversation or message, 403 for a non-member (as `conversation_for_member`)."""
    conversation_for_member(tenant=tenant, user_id=user_id, conversation_id=conversation_id)
    message = Message.objects.filter(tenant=tenant, conversation_id=conversation_id, id=message_id).first()
    if message is None:
        raise NotFound("Message not found.")
    return message
