"""Response shapes of docs/protocol.md section 2, for the OpenAPI schema only: views render with
`messaging.rendering`; these describe that output for generated clients (reused by other apps).
"""

from __future__ import annotations

from rest_framework import serializers

from .models import ConversationType, MessageType, Role, StreamState

MESSAGE_STATUS = ("sent", "delivered", "read")


class StreamOut(serializers.Serializer):
    stream_id = serializers.CharField()
    state = serializers.ChoiceField(choices=StreamState.choices)
    chunk_count = serializers.IntegerField()


class MessageOut(serializers.Serializer):
    message_id = serializers.CharField()
    conversation_id = serializers.CharField()
    sender_id = serializers.CharField()
    type = serializers.ChoiceField(choices=MessageType.choices)
    content = serializers.JSONField()
    seq = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    edited_at = serializers.DateTimeField(allow_null=True)
    reply_to = serializers.CharField(allow_null=True)
    client_msg_id = serializers.CharField(allow_null=True)
    metadata = serializers.DictField()
    status = serializers.ChoiceField(choices=[(s, s) for s in MESSAGE_STATUS])
    stream = StreamOut(allow_null=True)


class MessageEnvelopeOut(serializers.Serializer):
    message = MessageOut()


class MemberOut(serializers.Serializer):
    user_id = serializers.CharField()
    role = serializers.ChoiceField(choices=Role.choices)
    joined_at = serializers.DateTimeField()
    last_read_seq = serializers.IntegerField()


class ConversationOut(serializers.Serializer):
    conversation_id = serializers.CharField()
    type = serializers.ChoiceField(choices=ConversationType.choices)
    name = serializers.CharField(allow_blank=True)
    metadata = serializers.DictField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    last_seq = serializers.IntegerField()
    members = MemberOut(many=True)
    last_message = MessageOut(allow_null=True)
    unread_count = serializers.IntegerField()


class ConversationListOut(serializers.Serializer):
    conversations = ConversationOut(many=True)
    next_cursor = serializers.CharField(allow_null=True)


class MessageHistoryOut(serializers.Serializer):
    conversation_id = serializers.CharField()
    messages = MessageOut(many=True)
    has_more = serializers.BooleanField()


class PresenceEntryOut(serializers.Serializer):
    user_id = serializers.CharField()
    online = serializers.BooleanField()
    last_seen_at = serializers.DateTimeField(allow_null=True)


class PresenceOut(serializers.Serializer):
    presence = PresenceEntryOut(many=True)
