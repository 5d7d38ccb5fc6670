"""The runner's writes, each one short transaction (called through `in_worker`).

Every write to a claimed run is conditional on `state = running AND lease_owner = <me>`
under the run's row lock, the same lock a stop or the lease reaper takes: whoever ended the
run first wins, and a runner that lost its run writes nothing more (no text twice, no
second end). The reply is one stream message written through `streaming.services`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from aiim_project.core import events
from aiim_project.core.errors import AiimError
from messaging.models import StreamState
from streaming.services import NextChunk, stream_abort, stream_append, streams_append_next

from . import crypto, selectors, storage
from .models import Assistant, Run, RunState
from .rendering import state_event

REAP_BATCH = 100


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    estimated: bool

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Prepared:
    """What a claimed run calls its model with."""

    base_url: str
    api_key: str
    model: str
    params: dict[str, Any]
    messages: list[dict[str, Any]]


class RunFailed(Exception):
    """A run that cannot even call its model (assistant deleted, budget, key)."""

    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code, self.detail = code, detail


def publish_state(run: Run, state: str, code: str | None = None, detail: str | None = None) -> None:
    events.publish_all_on_commit(
        [state_event(tenant=run.tenant, conversation_id=run.conversation_id, assistant_id=run.assistant_id, run_id=run.id, state=state, code=code, detail=detail)]
    )


def queued_exists() -> bool:
    """Plain read first, so an idle runner never takes a write lock (SQLite) to find nothing."""
    return Run.objects.filter(state=RunState.QUEUED).exists()


@transaction.atomic
def claim_runs(*, owner: str, limit: int) -> list[Run]:
    """Claim up to `limit` queued runs, oldest first, within each assistant's limits.

    Queued rows are locked with SKIP LOCKED (PostgreSQL), so runners never wait on each
    other's candidates; then the candidates' assistant rows are locked, in one statement and
    a fixed order (two runners never wait on each other in a cycle), which serializes the
    per-assistant checks (max_concurrent_runs, one active run per conversation) across
    runners. The active runs are counted after that lock, so every claim another runner
    committed under it is counted. SQLite takes the database write lock for the transaction
    instead. A fixed number of statements for any number of runs (a burst of triggers is
    claimed in one transaction).
    """
    now = timezone.now()
    candidates = list(
        Run.objects.select_for_update(skip_locked=True).filter(state=RunState.QUEUED).order_by("created_at", "id")[: max(limit * 4, 20)]
    )
    if not candidates:
        return []
    keys = sorted({(run.tenant, run.assistant_id) for run in candidates})
    assistants = storage.lock_assistants(keys)
    limits = _Limits(storage.active_runs(keys))
    lease = now + timedelta(seconds=settings.ASSISTANT_LEASE_SECONDS)
    claimed: list[Run] = []
    for run in candidates:
        if len(claimed) >= limit:
            break
        assistant = assistants.get((run.tenant, run.assistant_id))
        if assistant is None:
            _end(run, RunState.FAILED, now, error=("assistant_missing", "The assistant was deleted."))
            continue
        if limits.may_start(run, assistant.max_concurrent_runs):
            _mark_started(run, assistant, limits, owner=owner, lease=lease, now=now)
            claimed.append(run)
    if claimed:
        Run.objects.filter(pk__in=[run.pk for run in claimed]).update(state=RunState.RUNNING, lease_owner=owner, lease_expires_at=lease, started_at=now)
    return claimed


def claim_new(*, runs: list[Run], owner: str, limit: int) -> list[Run]:
    """In the send transaction that is about to insert `runs`: mark running, leased to
    `owner`, those that may start at once, so the trigger hands them to this process's runner
    and no claim transaction stands between the send and the model call.

    The same limits and lock as `claim_runs`, but the assistants' rows are locked with SKIP
    LOCKED: a row another transaction holds (a claim, another send's start) is not waited
    for, its runs stay queued for the runner's claim. So a send never waits on an assistant,
    and a burst of triggers still starts in the batched claim. The caller inserts the runs.
    """
    keys = sorted({(run.tenant, run.assistant_id) for run in runs})
    assistants = storage.lock_assistants(keys, skip_locked=True)
    if not assistants:
        return []
    limits = _Limits(storage.active_runs(sorted(assistants)))
    now = timezone.now()
    lease = now + timedelta(seconds=settings.ASSISTANT_LEASE_SECONDS)
    started: list[Run] = []
    for run in runs:
        assistant = assistants.get((run.tenant, run.assistant_id))
        if assistant is not None and len(started) < limit and limits.may_start(run, assistant.max_concurrent_runs):
            _mark_started(run, assistant, limits, owner=owner, lease=lease, now=now)
            started.append(run)
        else:
            limits.queued(run)  # a later trigger in this conversation waits behind it
    return started


def _mark_started(run: Run, assistant: Assistant, limits: _Limits, *, owner: str, lease, now) -> None:
    limits.started(run)
    run.state, run.lease_owner, run.lease_expires_at, run.started_at = RunState.RUNNING, owner, lease, now
    run.claimed_assistant = assistant  # what prepare() calls the model with, read under the lock


class _Limits:
    """The active runs of some assistants, as the claim goes: running per assistant and per
    (assistant, conversation), and the queued ones per (assistant, conversation)."""

    def __init__(self, rows) -> None:
        self.running: dict[tuple[str, str], int] = {}
        self.running_here: set[tuple[str, str, str]] = set()
        self.queued_here: dict[tuple[str, str, str], list] = {}
        for tenant, assistant_id, conversation_id, state, created_at in rows:
            here = (tenant, assistant_id, conversation_id)
            if state == RunState.RUNNING:
                self._running(here)
            else:
                self.queued_here.setdefault(here, []).append(created_at)

    def may_start(self, run: Run, max_concurrent: int) -> bool:
        """Under the assistant's limit, nothing running in this conversation, and no older
        queued run of it here (first in, first out per conversation)."""
        here = (run.tenant, run.assistant_id, run.conversation_id)
        if self.running.get(here[:2], 0) >= max_concurrent or here in self.running_here:
            return False
        queued = self.queued_here.get(here, ())
        if run.created_at is None:  # a send's new run: behind every run queued here
            return not queued
        return not any(created < run.created_at for created in queued)

    def started(self, run: Run) -> None:
        self._running((run.tenant, run.assistant_id, run.conversation_id))

    def queued(self, run: Run) -> None:
        self.queued_here.setdefault((run.tenant, run.assistant_id, run.conversation_id), []).append(run.created_at)

    def _running(self, here: tuple[str, str, str]) -> None:
        self.running[here[:2]] = self.running.get(here[:2], 0) + 1
        self.running_here.add(here)


def prepare(*, run: Run, assistant: Assistant | None, recent: list[tuple[str, Any]] | None = None) -> Prepared:
    """The model call of a claimed run: endpoint, key, history (from `recent` when the
    caller read it). Raises RunFailed."""
    if assistant is None:
        raise RunFailed("assistant_missing", "The assistant was deleted.")
    budget = settings.ASSISTANT_DAILY_TOKENS
    if budget and storage.tokens_on(run.tenant, timezone.now().date()) >= budget:
        raise RunFailed("budget_exhausted", f"The tenant's daily token budget ({budget}) is used up.")
    try:
        api_key = crypto.decrypt(assistant.api_key_encrypted)
    except AiimError as exc:
        raise RunFailed("model_error", exc.detail) from None
    messages = selectors.history(
        assistant=assistant, conversation_id=run.conversation_id, max_chars=settings.ASSISTANT_HISTORY_CHARS, recent=recent
    )
    return Prepared(base_url=assistant.base_url, api_key=api_key, model=assistant.model, params=dict(assistant.params or {}), messages=messages)


def history_needed(runs: list[Run]) -> int:
    """How many recent messages the history of any of `runs` reads."""
    return max((run.claimed_assistant.history_limit for run in runs if run.claimed_assistant is not None), default=0)


def prepare_all(runs: list[Run], *, recent: list[tuple[str, Any]] | None = None) -> list[tuple[Run, Prepared | RunFailed]]:
    """Each claimed run's `prepare`, a RunFailed for one that cannot call its model.
    `recent`: the recent messages of the runs' one conversation (`history_needed` of them)."""
    out: list[tuple[Run, Prepared | RunFailed]] = []
    for run in runs:
        try:
            out.append((run, prepare(run=run, assistant=run.claimed_assistant, recent=recent)))
        except RunFailed as exc:
            out.append((run, exc))
    return out


def claim_and_prepare(*, owner: str, limit: int) -> list[tuple[Run, Prepared | RunFailed]]:
    """`claim_runs`, then `prepare_all`, in one worker call (one thread hop less before the
    model is called: it is on the time to first token)."""
    return prepare_all(claim_runs(owner=owner, limit=limit))


def _mine(run_id: str, owner: str) -> Run | None:
    return storage.lock_runs_of(owner, [run_id]).get(run_id)


def _count_tokens(run: Run, usage: Usage) -> None:
    """One run's usage on its tenant's counter of today (the daily budget)."""
    storage.add_tokens({run.tenant: usage.total_tokens}, timezone.now().date())


def _usage_fields(usage: Usage | None) -> dict[str, Any]:
    if usage is None:
        return {}
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "usage_estimated": usage.estimated,
    }


def _end(run: Run, state: str, now, *, error: tuple[str, str] | None = None, finish_reason: str | None = None, usage: Usage | None = None) -> None:
    fields: dict[str, Any] = {"state": state, "ended_at": now, "lease_expires_at": None, **_usage_fields(usage)}
    if finish_reason:
        fields["finish_reason"] = finish_reason
    if error:
        fields["error_code"], fields["error_detail"] = error
    Run.objects.filter(pk=run.pk).update(**fields)
    for name, value in fields.items():
        setattr(run, name, value)
    if error:
        publish_state(run, "error", *error)
    else:
        publish_state(run, "idle")


@dataclass(frozen=True)
class ChunkWrite:
    """One run's flush: `text` appended to its reply (the first text creates it, with the
    model's `reasoning` so far in its metadata); `end` completes the stream and the run.
    `start`: the runner has stored no text of this run yet (the write creates the reply)."""

    run_id: str
    text: str
    end: bool = False
    finish_reason: str | None = None
    usage: Usage | None = None
    reasoning: str = ""
    start: bool = False


@transaction.atomic
def write_chunks(*, owner: str, writes: list[ChunkWrite]) -> list[bool]:
    """The flushes of many runs in one transaction (the runner's group commit), in order.
    False for a run that is no longer this runner's (stopped, interrupted). Any error rolls
    back all of them: the runner then writes them one by one (`write_chunk`)."""
    mine = storage.lock_runs_of(owner, sorted({w.run_id for w in writes}))
    done = _append_texts(mine, writes)
    out = []
    used: dict[str, int] = {}  # tenant -> tokens of the runs this batch ends
    for k, write in enumerate(writes):
        run = mine.get(write.run_id)
        if run is not None and k not in done:
            _write(run, write)
            if write.end:
                if write.usage:
                    used[run.tenant] = used.get(run.tenant, 0) + write.usage.total_tokens
                del mine[write.run_id]  # ended: a later write of it in this batch finds it gone
        out.append(run is not None)
    storage.add_tokens(used, timezone.now().date())
    return out


def _append_texts(mine: dict[str, Run], writes: list[ChunkWrite]) -> set[int]:
    """The common case in one statement for all runs (docs/assistants.md, "Cost"): each
    started reply's leading plain text writes in this batch, joined into one chunk. The
    positions in `writes` done; the others (a start, an end, a refused append) go through
    `_write` in order after them."""
    leading: dict[str, list[int]] = {}
    closed: set[str] = set()
    for k, write in enumerate(writes):
        run = mine.get(write.run_id)
        if run is None or write.run_id in closed:
            continue
        if run.reply_message_id and write.text and not write.end:
            leading.setdefault(write.run_id, []).append(k)
        else:
            closed.add(write.run_id)
    if not leading:
        return set()
    run_ids = list(leading)
    chunks = [
        NextChunk(
            tenant=mine[run_id].tenant,
            sender=mine[run_id].assistant_id,
            message_id=mine[run_id].reply_message_id,
            chunk="".join(writes[k].text for k in leading[run_id]),
        )
        for run_id in run_ids
    ]
    applied = streams_append_next(chunks=chunks)
    return {k for run_id, ok in zip(run_ids, applied, strict=True) if ok for k in leading[run_id]}


@transaction.atomic
def write_chunk(*, owner: str, write: ChunkWrite) -> bool:
    """One flush on its own (see `write_chunks`)."""
    run = _mine(write.run_id, owner)
    if run is None:
        return False
    _write(run, write)
    if write.end and write.usage:
        _count_tokens(run, write.usage)
    return True


def _write(run: Run, write: ChunkWrite) -> None:
    now = timezone.now()
    if write.text or (write.end and run.reply_message_id):
        result = stream_append(
            tenant=run.tenant,
            sender=run.assistant_id,
            conversation_id=run.conversation_id,
            client_msg_id=run.client_msg_id,
            chunk=write.text,
            stream_end=write.end,
            metadata={"run_id": run.id, **({"reasoning": write.reasoning} if write.reasoning else {})},
            # A new reply is recorded on its run by the reply's own INSERT statement.
            on_start=(storage.reply_recorded(run.id, now),),
            starting=not run.reply_message_id,
            savepoint=False,  # both callers roll their whole transaction back on any error
        )
        if result.started:
            run.reply_message_id, run.first_token_at = result.message.id, now
    if write.end:
        _end(run, RunState.COMPLETED, now, finish_reason=write.finish_reason or "stop", usage=write.usage)


@transaction.atomic
def fail(*, run_id: str, owner: str, code: str, detail: str, usage: Usage | None = None) -> bool:
    """End the run `failed`; its reply (if any) keeps its text, stream state `failed`."""
    run = _mine(run_id, owner)
    if run is None:
        return False
    if run.reply_message_id:
        _end_stream(run, StreamState.FAILED)
    _end(run, RunState.FAILED, timezone.now(), error=(code, detail[:2000]), usage=usage)
    if usage:
        _count_tokens(run, usage)
    return True


def _end_stream(run: Run, state: str) -> None:
    try:
        stream_abort(tenant=run.tenant, sender=run.assistant_id, conversation_id=run.conversation_id, client_msg_id=run.client_msg_id, state=state)
    except AiimError:  # already ended (the stream reaper), or the assistant left: nothing to end
        pass


@transaction.atomic
def record_usage(*, run: Run, owner: str, usage: Usage) -> None:
    """A stopped run's usage, written by the runner that ran it, once."""
    if Run.objects.filter(pk=run.pk, lease_owner=owner, state=RunState.STOPPED, total_tokens=0).update(**_usage_fields(usage)):
        _count_tokens(run, usage)


@transaction.atomic
def renew(*, owner: str, run_ids: list[str]) -> set[str]:
    """Extend the leases of this runner's runs; returns those still running (the others
    were stopped or interrupted meanwhile: their tasks are cancelled). Locked in id order
    first, as the group commit locks them (docs/assistants.md, "Exactly-once writes")."""
    if not run_ids:
        return set()
    mine = storage.lock_runs_of(owner, sorted(run_ids))
    if mine:
        lease = timezone.now() + timedelta(seconds=settings.ASSISTANT_LEASE_SECONDS)
        Run.objects.filter(pk__in=list(mine)).update(lease_expires_at=lease)
    return set(mine)


def still_running(*, owner: str, run_ids: list[str]) -> set[str]:
    if not run_ids:
        return set()
    return set(Run.objects.filter(pk__in=run_ids, lease_owner=owner, state=RunState.RUNNING).values_list("pk", flat=True))


def expired_exists() -> bool:
    return Run.objects.filter(state=RunState.RUNNING, lease_expires_at__lt=timezone.now()).exists()


@transaction.atomic
def interrupt_expired() -> list[Run]:
    """Runs whose runner died (lease expired): `interrupted`, their reply `aborted` with the
    text it had. Safe in every runner at once (SKIP LOCKED)."""
    now = timezone.now()
    stale = list(
        Run.objects.select_for_update(skip_locked=True)
        .filter(state=RunState.RUNNING, lease_expires_at__lt=now)
        .order_by("lease_expires_at")[:REAP_BATCH]
    )
    for run in stale:
        if run.reply_message_id:
            _end_stream(run, StreamState.ABORTED)
        _end(run, RunState.INTERRUPTED, now, error=("interrupted", "The runner executing this run stopped."))
    return stale
