"""Input parsing for the REST API. Serializers validate shapes only; services decide."""

from __future__ import annotations

from rest_framework import serializers

from .models import ConversationType, MessageType, Role
from .selectors import MAX_PAGE

ID = {"max_length": 200, "allow_blank": False}


class MemberSpecIn(serializers.Serializer):
    user_id = serializers.CharField(**ID)
    role = serializers.ChoiceField(choices=Role.choices, default=Role.MEMBER)


class ConversationCreateIn(serializers.Serializer):
    type = serializers.ChoiceField(choices=ConversationType.choices, default=ConversationType.DIRECT)
    name = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    member_ids = serializers.ListField(child=serializers.CharField(**ID), required=False, default=list, max_length=1000)
    members = MemberSpecIn(many=True, required=False, default=list)
    metadata = serializers.DictField(required=False, default=dict)
    tenant_id = serializers.CharField(required=False, max_length=200)


class MembersAddIn(serializers.Serializer):
    user_ids = serializers.ListField(child=serializers.CharField(**ID), allow_empty=False, max_length=1000)
    role = serializers.ChoiceField(choices=Role.choices, default=Role.MEMBER)
    tenant_id = serializers.CharField(required=False, max_length=200)


class MessageSendIn(serializers.Serializer):
    conversation_id = serializers.CharField(max_length=64)
    type = serializers.ChoiceField(choices=MessageType.choices, default=MessageType.TEXT)
    content = serializers.JSONField()
    reply_to = serializers.CharField(max_length=64, required=False, allow_null=True, default=None)
    client_msg_id = serializers.CharField(max_length=200, required=False, allow_null=True, default=None)
    metadata = serializers.DictField(required=False, allow_null=True, default=None)
    tenant_id = serializers.CharField(required=False, max_length=200)


class ConversationListQuery(serializers.Serializer):
    limit = serializers.IntegerField(min_value=1, max_value=MAX_PAGE, default=50)
    cursor = serializers.CharField(required=False, allow_blank=True, max_length=500)


class MessageHistoryQuery(serializers.Serializer):
    limit = serializers.IntegerField(min_value=1, max_value=MAX_PAGE, default=50)
    before_id = serializers.CharField(required=False, max_length=64)
    before_seq = serializers.IntegerField(required=False, min_value=0, max_value=2**62)
    after_seq = serializers.IntegerField(required=False, min_value=0, max_value=2**62)
