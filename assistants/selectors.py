"""Reads: assistants, runs, and the history a run sends to its model."""

from __future__ import annotations

import re
from typing import Any

from aiim_project.core.errors import NotFound
from messaging.selectors import conversation_for_member

from . import storage
from .models import ACTIVE_STATES, Assistant, Run

MAX_RUNS_PAGE = 200


def assistant_list(*, tenant: str) -> list[Assistant]:
    return list(Assistant.objects.filter(tenant=tenant).order_by("assistant_id"))


def assistant_get(*, tenant: str, assistant_id: str) -> Assistant:
    assistant = Assistant.objects.filter(tenant=tenant, assistant_id=assistant_id).first()
    if assistant is None:
        raise NotFound("Assistant not found.")
    return assistant


def run_for_member(*, tenant: str, user_id: str, run_id: str) -> Run:
    """404 for a missing run or another tenant's; the caller must be a member of its conversation."""
    run = Run.objects.filter(tenant=tenant, id=run_id).first() if len(run_id) <= 64 else None
    if run is None:
        raise NotFound("Run not found.")
    conversation_for_member(tenant=tenant, user_id=user_id, conversation_id=run.conversation_id)
    return run


def conversation_runs(*, tenant: str, user_id: str, conversation_id: str, limit: int) -> list[Run]:
    """The conversation's runs, newest first."""
    conversation_for_member(tenant=tenant, user_id=user_id, conversation_id=conversation_id)
    return list(Run.objects.filter(tenant=tenant, conversation_id=conversation_id).order_by("-created_at", "-id")[:limit])


def active_run_for_conversation(*, tenant: str, user_id: str, conversation_id: str) -> Run | None:
    """The conversation's newest queued or running run (what useChat resumes), or None."""
    conversation_for_member(tenant=tenant, user_id=user_id, conversation_id=conversation_id, hide_membership=True)
    return (
        Run.objects.filter(tenant=tenant, conversation_id=conversation_id, state__in=ACTIVE_STATES)
        .order_by("-created_at", "-id")
        .first()
    )


def run_progress(*, run_id: str) -> Run | None:
    """The fields a chat stream waits on: the reply's id, the state, the error."""
    return Run.objects.filter(pk=run_id).only("id", "reply_message_id", "state", "error_code", "error_detail").first()


def _text_of(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    if isinstance(content, dict) and isinstance(content.get("text"), str):
        return content["text"]
    return None


def history(
    *, assistant: Assistant, conversation_id: str, max_chars: int, recent: list[tuple[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """The chat messages sent to the model: the system prompt, then the conversation's last
    `history_limit` text messages (and AI replies) oldest first, within `max_chars` (the
    oldest are dropped first). The assistant's own messages are role `assistant`, everyone
    else's `user` with `name` = the sender id. `recent`: the conversation's
    `storage.recent_messages`, already read (at least `history_limit` of them, or all)."""
    if recent is None:
        recent = storage.recent_messages(conversation_id, assistant.history_limit)
    picked: list[dict[str, Any]] = []
    used = 0
    for sender_id, content in recent[: assistant.history_limit]:
        text = _text_of(content)
        if not text:
            continue
        if used + len(text) > max_chars:
            break
        used += len(text)
        if sender_id == assistant.assistant_id:
            picked.append({"role": "assistant", "content": text})
        else:
            picked.append({"role": "user", "name": _name(sender_id), "content": text})
    picked.reverse()
    system = [{"role": "system", "content": assistant.system_prompt}] if assistant.system_prompt else []
    return system + picked


def _name(sender_id: str) -> str:
    # OpenAI allows ^[a-zA-Z0-9_-]{1,64}$ in `name`; most ids fit, others are made to.
    cleaned = re.sub(r"[^A-Za-z0-9_-]", "_", sender_id)[:64]
    return cleaned or "user"
