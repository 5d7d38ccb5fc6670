"""Wire shapes of assistants and runs (docs/protocol.md, Assistants). No secret is ever rendered."""

from __future__ import annotations

from typing import Any

from aiim_project.core import events
from messaging.rendering import iso

from .models import Assistant, Run


def assistant_dict(assistant: Assistant, *, full: bool = True) -> dict[str, Any]:
    """`full` for the admin's views; every member of the tenant sees id, name and model."""
    data: dict[str, Any] = {"assistant_id": assistant.assistant_id, "name": assistant.name, "model": assistant.model}
    if full:
        data.update(
            base_url=assistant.base_url,
            has_api_key=bool(assistant.api_key_encrypted),
            system_prompt=assistant.system_prompt,
            params=assistant.params,
            reply_in=assistant.reply_in,
            history_limit=assistant.history_limit,
            max_concurrent_runs=assistant.max_concurrent_runs,
            created_at=iso(assistant.created_at),
            updated_at=iso(assistant.updated_at),
        )
    return data


def run_dict(run: Run) -> dict[str, Any]:
    return {
        "run_id": run.id,
        "assistant_id": run.assistant_id,
        "conversation_id": run.conversation_id,
        "trigger_message_id": run.trigger_message_id,
        "reply_message_id": run.reply_message_id,
        "state": run.state,
        "finish_reason": run.finish_reason,
        "usage": {
            "prompt_tokens": run.prompt_tokens,
            "completion_tokens": run.completion_tokens,
            "total_tokens": run.total_tokens,
            "estimated": run.usage_estimated,
        },
        "error": {"code": run.error_code, "detail": run.error_detail or ""} if run.error_code else None,
        "created_at": iso(run.created_at),
        "started_at": iso(run.started_at),
        "first_token_at": iso(run.first_token_at),
        "ended_at": iso(run.ended_at),
    }


def state_event(
    *, tenant: str, conversation_id: str, assistant_id: str, run_id: str, state: str, code: str | None = None, detail: str | None = None
) -> tuple[list[str], dict]:
    """`assistant.state`: ephemeral (no seq, not stored), to the conversation, like typing."""
    data: dict[str, Any] = {"assistant_id": assistant_id, "run_id": run_id, "state": state}
    if code:
        data.update(code=code, detail=detail or "")
    return (
        [events.conversation_group(tenant, conversation_id)],
        events.build(conversation_id, "assistant.state", data, user_id=assistant_id),
    )
