"""Writes on assistants and runs by people (admins, members): check -> do -> notify.

The runner's own writes (claim, chunks, end) are in `execution`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from aiim_project.core import events
from aiim_project.core.checks import MAX_OBJECT_ID_LENGTH, check_id
from aiim_project.core.errors import Conflict, Forbidden, Invalid, NotFound
from messaging.models import Member, Message, MessageType, StreamState
from messaging.selectors import conversation_for_member
from messaging.services import check_user_id, encoded_size, message_send
from streaming.services import stream_abort

from . import crypto, triggers, wake
from .models import ACTIVE_STATES, Assistant, ReplyIn, Run, RunState
from .rendering import state_event

_UNSET: Any = object()
MAX_HISTORY_LIMIT = 1000
MAX_CONCURRENT_RUNS = 1000


def check_admin(*, is_admin: bool) -> None:
    if not is_admin:
        raise Forbidden("Only an admin (token claim role = \"admin\") may manage assistants.")


def _text(value: Any, field: str, *, max_length: int, blank: bool = False) -> str:
    if not isinstance(value, str) or (not blank and not value.strip()) or len(value) > max_length or "\x00" in value:
        raise Invalid(f"{field} must be a {'' if blank else 'non-empty '}string of at most {max_length} characters.", errors={field: ["Invalid."]})
    return value


def _int(value: Any, field: str, *, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise Invalid(f"{field} must be an integer from {low} to {high}.", errors={field: ["Invalid."]})
    return value


def _base_url(value: Any) -> str:
    value = _text(value, "base_url", max_length=2000)
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise Invalid("base_url must be an http(s) URL: the endpoint's /v1 root.", errors={"base_url": ["Invalid URL."]})
    return value.rstrip("/")


def _params(value: Any) -> dict:
    if not isinstance(value, dict):
        raise Invalid("params must be an object.", errors={"params": ["Expected an object."]})
    if encoded_size(value, "params") > settings.MAX_MESSAGE_BYTES:
        raise Invalid("params is too large.", errors={"params": ["Too large."]})
    reserved = {"model", "messages", "stream", "stream_options"} & set(value)
    if reserved:
        raise Invalid(f"params may not set {', '.join(sorted(reserved))}.", errors={"params": ["Reserved key."]})
    return value


@dataclass(frozen=True)
class AssistantInput:
    """Fields of a create or a PATCH; _UNSET = not given."""

    name: Any = _UNSET
    base_url: Any = _UNSET
    model: Any = _UNSET
    api_key: Any = _UNSET
    system_prompt: Any = _UNSET
    params: Any = _UNSET
    reply_in: Any = _UNSET
    history_limit: Any = _UNSET
    max_concurrent_runs: Any = _UNSET


def _apply(assistant: Assistant, data: AssistantInput) -> None:
    if data.name is not _UNSET:
        assistant.name = _text(data.name, "name", max_length=200)
    if data.base_url is not _UNSET:
        assistant.base_url = _base_url(data.base_url)
    if data.model is not _UNSET:
        assistant.model = _text(data.model, "model", max_length=200)
    if data.api_key is not _UNSET:
        if data.api_key is not None:
            _text(data.api_key, "api_key", max_length=4000, blank=True)
        assistant.api_key_encrypted = crypto.encrypt(data.api_key or "")
    if data.system_prompt is not _UNSET:
        assistant.system_prompt = _text(data.system_prompt or "", "system_prompt", max_length=100_000, blank=True)
    if data.params is not _UNSET:
        assistant.params = _params(data.params if data.params is not None else {})
    if data.reply_in is not _UNSET:
        if data.reply_in not in ReplyIn.values:
            raise Invalid("reply_in must be 'direct' or 'always'.", errors={"reply_in": ["Invalid choice."]})
        assistant.reply_in = data.reply_in
    if data.history_limit is not _UNSET:
        assistant.history_limit = _int(data.history_limit, "history_limit", low=0, high=MAX_HISTORY_LIMIT)
    if data.max_concurrent_runs is not _UNSET:
        assistant.max_concurrent_runs = _int(data.max_concurrent_runs, "max_concurrent_runs", low=1, high=MAX_CONCURRENT_RUNS)


@transaction.atomic
def assistant_create(*, tenant: str, is_admin: bool, assistant_id: Any, data: AssistantInput) -> Assistant:
    check_admin(is_admin=is_admin)
    assistant = Assistant(tenant=tenant, assistant_id=check_user_id(assistant_id, "assistant_id"))
    for required in ("name", "base_url", "model"):
        if getattr(data, required) is _UNSET:
            raise Invalid(f"{required} is required.", errors={required: ["This field is required."]})
    _apply(assistant, data)
    try:
        with transaction.atomic():
            assistant.save()
    except IntegrityError:
        raise Conflict("An assistant with this id exists.") from None
    triggers.forget_tenant(tenant)  # now and after commit: a send in between may have cached "none"
    transaction.on_commit(lambda: triggers.forget_tenant(tenant))
    return assistant


def _own(tenant: str, assistant_id: str, *, lock: bool = False) -> Assistant:
    qs = Assistant.objects.select_for_update() if lock else Assistant.objects
    assistant = qs.filter(tenant=tenant, assistant_id=assistant_id).first()
    if assistant is None:
        raise NotFound("Assistant not found.")
    return assistant


@transaction.atomic
def assistant_update(*, tenant: str, is_admin: bool, assistant_id: str, data: AssistantInput) -> Assistant:
    check_admin(is_admin=is_admin)
    assistant = _own(tenant, assistant_id, lock=True)
    _apply(assistant, data)
    assistant.save()
    return assistant


@transaction.atomic
def assistant_delete(*, tenant: str, is_admin: bool, assistant_id: str) -> None:
    """Its queued runs end `failed` when a runner picks them (the assistant is gone);
    a running one finishes."""
    check_admin(is_admin=is_admin)
    _own(tenant, assistant_id, lock=True).delete()
    transaction.on_commit(lambda: triggers.forget_tenant(tenant))


def _end_queued(run: Run, now) -> None:
    Run.objects.filter(pk=run.pk).update(state=RunState.STOPPED, finish_reason="stopped", ended_at=now)
    run.state, run.finish_reason, run.ended_at = RunState.STOPPED, "stopped", now


def stop_locked(run: Run) -> None:
    """Stop a run whose row the caller holds locked. A queued run ends before the model is
    called; a running one ends now (the message keeps the text stored so far, `stopped`)
    and its runner, whose writes all check the row, closes the model request."""
    now = timezone.now()
    if run.state == RunState.QUEUED:
        _end_queued(run, now)
    else:
        if run.reply_message_id:
            stream_abort(
                tenant=run.tenant,
                sender=run.assistant_id,
                conversation_id=run.conversation_id,
                client_msg_id=run.client_msg_id,
                state=StreamState.STOPPED,
            )
        Run.objects.filter(pk=run.pk).update(state=RunState.STOPPED, finish_reason="stopped", ended_at=now, lease_expires_at=None)
        run.state, run.finish_reason, run.ended_at = RunState.STOPPED, "stopped", now
    events.publish_all_on_commit(
        [state_event(tenant=run.tenant, conversation_id=run.conversation_id, assistant_id=run.assistant_id, run_id=run.id, state="idle")]
    )
    transaction.on_commit(wake.wake, robust=True)


def _run_for_member(tenant: str, user_id: str, run_id: Any, *, lock: bool) -> Run:
    if not isinstance(run_id, str) or not run_id or len(run_id) > 64 or "\x00" in run_id:
        raise NotFound("Run not found.")
    qs = Run.objects.select_for_update() if lock else Run.objects
    run = qs.filter(tenant=tenant, id=run_id).first()
    if run is None:
        raise NotFound("Run not found.")
    conversation_for_member(tenant=tenant, user_id=user_id, conversation_id=run.conversation_id)
    return run


@transaction.atomic
def run_stop(*, tenant: str, user_id: str, run_id: Any) -> Run:
    """Any member of the run's conversation may stop it; an ended run is a 409."""
    run = _run_for_member(tenant, user_id, run_id, lock=True)
    if run.state not in ACTIVE_STATES:
        raise Conflict(f"The run has ended ({run.state}).", state=run.state)
    stop_locked(run)
    return run


@transaction.atomic
def conversation_runs_stop(
    *, tenant: str, user_id: str, conversation_id: Any, run_id: Any = None, hide_membership: bool = False
) -> list[Run]:
    """The `stop_run` frame: one run, or (no run_id) every active run of the conversation."""
    if run_id is not None:
        run = _run_for_member(tenant, user_id, run_id, lock=True)
        if run.conversation_id != conversation_id:
            raise NotFound("Run not found.")
        if run.state not in ACTIVE_STATES:
            raise Conflict(f"The run has ended ({run.state}).", state=run.state)
        stop_locked(run)
        return [run]
    check_id(conversation_id, "conversation_id", max_length=MAX_OBJECT_ID_LENGTH, detail="conversation_id must be a conversation id.")
    conversation_for_member(tenant=tenant, user_id=user_id, conversation_id=conversation_id, hide_membership=hide_membership)
    # Locked in id order, as the runner's group commit locks runs; stopped oldest first.
    runs = list(
        Run.objects.select_for_update().filter(tenant=tenant, conversation_id=conversation_id, state__in=ACTIVE_STATES).order_by("id")
    )
    runs.sort(key=lambda run: run.created_at)
    for run in runs:
        stop_locked(run)
    return runs


# -- the AI SDK chat endpoints (docs/protocol.md 7.4) ------------------------------------


class NoAssistant(Conflict):
    """The conversation has no assistant member (or not the one asked for): nothing can answer."""

    code, default_detail = "no_assistant", "This conversation has no assistant to answer."


class NoActiveRun(Conflict):
    code, default_detail = "no_active_run", "No run of this conversation is active."


def chat_assistant(*, tenant: str, conversation_id: str, assistant_id: Any = None) -> str:
    """The assistant that answers in the conversation: `assistant_id` if given (it must be
    an assistant member), else the only assistant member."""
    members = Member.objects.filter(conversation_id=conversation_id).values("user_id")
    ids = sorted(Assistant.objects.filter(tenant=tenant, assistant_id__in=members).values_list("assistant_id", flat=True))
    if assistant_id is not None:
        if assistant_id not in ids:
            raise NoAssistant("assistant_id is not an assistant member of this conversation.")
        return assistant_id
    if not ids:
        raise NoAssistant()
    if len(ids) > 1:
        raise Invalid("This conversation has several assistants: say which in assistant_id.", errors={"assistant_id": ["Required."]})
    return ids[0]


def _start_run(*, tenant: str, assistant_id: str, conversation_id: str, trigger_message_id: str) -> Run:
    run = Run.objects.create(tenant=tenant, assistant_id=assistant_id, conversation_id=conversation_id, trigger_message_id=trigger_message_id)
    events.publish_all_on_commit(
        [state_event(tenant=tenant, conversation_id=conversation_id, assistant_id=assistant_id, run_id=run.id, state="queued")]
    )
    transaction.on_commit(wake.wake, robust=True)
    return run


@transaction.atomic
def chat_send(*, tenant: str, user_id: str, conversation_id: str, client_msg_id: str, text: str, assistant_id: Any = None) -> Run:
    """Store the caller's message (once per client_msg_id) and return the run answering it.
    The trigger hook may already have started that run in this transaction (direct
    conversation, reply_in=always, a mention): it is reused, so one message starts one run
    of this assistant; a retry returns the first attempt's run."""
    conversation_for_member(tenant=tenant, user_id=user_id, conversation_id=conversation_id, hide_membership=True)
    answering = chat_assistant(tenant=tenant, conversation_id=conversation_id, assistant_id=assistant_id)
    message, _ = message_send(tenant=tenant, sender=user_id, conversation_id=conversation_id, content=text, client_msg_id=client_msg_id)
    run = (
        Run.objects.filter(tenant=tenant, conversation_id=conversation_id, assistant_id=answering, trigger_message_id=message.id)
        .order_by("created_at")
        .first()
    )
    return run or _start_run(tenant=tenant, assistant_id=answering, conversation_id=conversation_id, trigger_message_id=message.id)


@transaction.atomic
def chat_regenerate(*, tenant: str, user_id: str, conversation_id: str, assistant_id: Any = None) -> Run:
    """A new run for the conversation's last human message (the earlier reply stays stored)."""
    conversation_for_member(tenant=tenant, user_id=user_id, conversation_id=conversation_id, hide_membership=True)
    answering = chat_assistant(tenant=tenant, conversation_id=conversation_id, assistant_id=assistant_id)
    bots = Assistant.objects.filter(tenant=tenant).values("assistant_id")
    last = (
        Message.objects.filter(conversation_id=conversation_id, type=MessageType.TEXT)
        .exclude(sender_id__in=bots)
        .order_by("-seq")
        .values_list("id", flat=True)
        .first()
    )
    if last is None:
        raise Invalid("There is no human message to answer again.", errors={"trigger": ["Nothing to regenerate."]})
    return _start_run(tenant=tenant, assistant_id=answering, conversation_id=conversation_id, trigger_message_id=last)


@transaction.atomic
def chat_stop(*, tenant: str, user_id: str, conversation_id: str) -> list[Run]:
    """Stop every active run of the conversation; none active is a 409 `no_active_run`."""
    runs = conversation_runs_stop(tenant=tenant, user_id=user_id, conversation_id=conversation_id, hide_membership=True)
    if not runs:
        raise NoActiveRun()
    return runs
