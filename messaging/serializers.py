"""Input parsing for the REST API. Serializers validate shapes only; services decide."""

from __future__ import annotations

import json

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


# --- The send path's body, without a serializer: same data and errors as `MessageSendIn`, a
# third less CPU per send (docs/architecture.md, "The send path").

_MISSING = object()
_MESSAGE_TYPES = {str(value): value for value, _ in MessageType.choices}


def _char(data: dict, name: str, errors: dict, *, max_length: int, required: bool = True, allow_null: bool = False):
    """A DRF CharField (allow_blank=False, trim_whitespace=True) with max_length."""
    value = data.get(name, _MISSING)
    if value is _MISSING:
        if required:
            errors[name] = ["This field is required."]
        return _MISSING
    if value == "" or str(value).strip() == "":
        errors[name] = ["This field may not be blank."]
        return _MISSING
    if value is None:
        if allow_null:
            return None
        errors[name] = ["This field may not be null."]
        return _MISSING
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        errors[name] = ["Not a valid string."]
        return _MISSING
    text = str(value).strip()
    problems = []
    if len(text) > max_length:
        problems.append(f"Ensure this field has no more than {max_length} characters.")
    if "\x00" in text:
        problems.append("Null characters are not allowed.")
    if not text.isascii():
        for ch in text:
            if 0xD800 <= ord(ch) <= 0xDFFF:
                problems.append(f"Surrogate characters are not allowed: U+{ord(ch):X}.")
                break
    if problems:
        errors[name] = problems
        return _MISSING
    return text


def parse_message_send(data) -> dict:
    """`MessageSendIn(data=data)`'s validated_data, or its ValidationError."""
    if type(data) is not dict:
        serializer = MessageSendIn(data=data)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data
    errors: dict[str, list[str]] = {}
    out: dict = {}
    out["conversation_id"] = _char(data, "conversation_id", errors, max_length=64)

    kind = data.get("type", _MISSING)
    if kind is _MISSING:
        out["type"] = MessageType.TEXT
    elif kind is None:
        errors["type"] = ["This field may not be null."]
    elif str(kind) in _MESSAGE_TYPES:
        out["type"] = _MESSAGE_TYPES[str(kind)]
    else:
        errors["type"] = [f'"{kind}" is not a valid choice.']

    content = data.get("content", _MISSING)
    if content is _MISSING:
        errors["content"] = ["This field is required."]
    elif content is None:
        errors["content"] = ["This field may not be null."]
    else:
        try:
            json.dumps(content)
        except (TypeError, ValueError):
            errors["content"] = ["Value must be valid JSON."]
        out["content"] = content

    for name, max_length in (("reply_to", 64), ("client_msg_id", 200)):
        value = _char(data, name, errors, max_length=max_length, required=False, allow_null=True)
        out[name] = None if value is _MISSING else value

    metadata = data.get("metadata", _MISSING)
    if metadata is _MISSING or metadata is None:
        out["metadata"] = None
    elif not isinstance(metadata, dict):
        errors["metadata"] = [f'Expected a dictionary of items but got type "{type(metadata).__name__}".']
    else:
        out["metadata"] = metadata

    tenant_id = _char(data, "tenant_id", errors, max_length=200, required=False)
    if tenant_id is not _MISSING:
        out["tenant_id"] = tenant_id
    if errors:
        raise serializers.ValidationError(errors)
    return out
