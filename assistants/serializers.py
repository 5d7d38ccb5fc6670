"""Input and output shapes of the assistants API. The services re-check every value; these
turn bad shapes into 400s with field errors and describe the API in the OpenAPI schema."""

from __future__ import annotations

from rest_framework import serializers

from .models import ReplyIn, RunState
from .services import MAX_CONCURRENT_RUNS, MAX_HISTORY_LIMIT, AssistantInput

FIELDS = ("name", "base_url", "model", "api_key", "system_prompt", "params", "reply_in", "history_limit", "max_concurrent_runs")


class AssistantIn(serializers.Serializer):
    assistant_id = serializers.CharField(max_length=200, trim_whitespace=False)
    name = serializers.CharField(max_length=200)
    base_url = serializers.CharField(max_length=2000, help_text="The endpoint's /v1 root; requests go to {base_url}/chat/completions.")
    model = serializers.CharField(max_length=200)
    api_key = serializers.CharField(required=False, allow_blank=True, allow_null=True, write_only=True, trim_whitespace=False)
    system_prompt = serializers.CharField(required=False, allow_blank=True, allow_null=True, trim_whitespace=False)
    params = serializers.DictField(required=False, allow_null=True, help_text="Passed through to the model (temperature, max_tokens, ...).")
    reply_in = serializers.ChoiceField(choices=ReplyIn.choices, required=False)
    history_limit = serializers.IntegerField(required=False, min_value=0, max_value=MAX_HISTORY_LIMIT)
    max_concurrent_runs = serializers.IntegerField(required=False, min_value=1, max_value=MAX_CONCURRENT_RUNS)


class AssistantPatchIn(AssistantIn):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, partial=True, **kwargs)

    assistant_id = None


def to_input(data: dict) -> AssistantInput:
    return AssistantInput(**{name: data[name] for name in FIELDS if name in data})


class AssistantOut(serializers.Serializer):
    assistant_id = serializers.CharField()
    name = serializers.CharField()
    model = serializers.CharField()
    base_url = serializers.CharField(required=False, help_text="Admins only.")
    has_api_key = serializers.BooleanField(required=False, help_text="Admins only. The key itself is never returned.")
    system_prompt = serializers.CharField(required=False)
    params = serializers.DictField(required=False)
    reply_in = serializers.ChoiceField(choices=ReplyIn.choices, required=False)
    history_limit = serializers.IntegerField(required=False)
    max_concurrent_runs = serializers.IntegerField(required=False)
    created_at = serializers.DateTimeField(required=False)
    updated_at = serializers.DateTimeField(required=False)


class AssistantListOut(serializers.Serializer):
    assistants = AssistantOut(many=True)


class UsageOut(serializers.Serializer):
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    total_tokens = serializers.IntegerField()
    estimated = serializers.BooleanField()


class RunErrorOut(serializers.Serializer):
    code = serializers.CharField()
    detail = serializers.CharField()


class RunOut(serializers.Serializer):
    run_id = serializers.CharField()
    assistant_id = serializers.CharField()
    conversation_id = serializers.CharField()
    trigger_message_id = serializers.CharField(allow_null=True)
    reply_message_id = serializers.CharField(allow_null=True)
    state = serializers.ChoiceField(choices=RunState.choices)
    finish_reason = serializers.CharField(allow_null=True)
    usage = UsageOut()
    error = RunErrorOut(allow_null=True)
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    first_token_at = serializers.DateTimeField(allow_null=True)
    ended_at = serializers.DateTimeField(allow_null=True)


class RunListOut(serializers.Serializer):
    runs = RunOut(many=True)


class RunListQuery(serializers.Serializer):
    limit = serializers.IntegerField(required=False, default=50, min_value=1, max_value=200)
