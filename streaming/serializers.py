"""Input shapes of the stream endpoint. The service re-checks values (WebSocket frames reach
it without a serializer); this layer only turns bad shapes into 400s with field errors."""

from __future__ import annotations

from rest_framework import serializers


class StrictString(serializers.CharField):
    """A JSON string as is: no coercion of numbers, no trimming (a chunk's spaces are text)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StreamChunkIn(serializers.Serializer):
    conversation_id = StrictString(max_length=64)
    client_msg_id = StrictString(max_length=200)
    chunk = StrictString(required=False, allow_blank=True)
    chunk_index = serializers.IntegerField(required=False, allow_null=True, default=None, min_value=0, max_value=2**31 - 1)
    stream_end = serializers.BooleanField(required=False, default=False)
    stream_abort = serializers.BooleanField(required=False, default=False)
    tenant_id = serializers.CharField(required=False, max_length=200)

    def validate(self, attrs):
        if not attrs["stream_abort"] and "chunk" not in attrs:
            raise serializers.ValidationError({"chunk": ["This field is required."]})
        return attrs
