"""Input shapes of the receipts REST API. Shapes only; the service decides the rest."""

from __future__ import annotations

from rest_framework import serializers

from aiim_project.core.checks import MAX_OBJECT_ID_LENGTH as MAX_MESSAGE_ID

from .services import MAX_SEQ

CONVERSATION_ID = {"max_length": 64, "allow_blank": False}


class DeliveredIn(serializers.Serializer):
    conversation_id = serializers.CharField(**CONVERSATION_ID)
    message_id = serializers.CharField(max_length=MAX_MESSAGE_ID, required=False)
    up_to_seq = serializers.IntegerField(min_value=0, max_value=MAX_SEQ, required=False)
    tenant_id = serializers.CharField(required=False, max_length=200)


class ReadIn(serializers.Serializer):
    conversation_id = serializers.CharField(**CONVERSATION_ID)
    last_read_message_id = serializers.CharField(max_length=MAX_MESSAGE_ID, required=False)
    last_read_seq = serializers.IntegerField(min_value=0, max_value=MAX_SEQ, required=False)
    user_id = serializers.CharField(required=False, max_length=200)
    tenant_id = serializers.CharField(required=False, max_length=200)


class ReceiptOut(serializers.Serializer):
    user_id = serializers.CharField()
    delivered_at = serializers.DateTimeField(allow_null=True)
    read_at = serializers.DateTimeField(allow_null=True)


class MessageReceiptsOut(serializers.Serializer):
    """Documents the response; the view renders it directly."""

    conversation_id = serializers.CharField()
    message_id = serializers.CharField()
    receipts = ReceiptOut(many=True)
