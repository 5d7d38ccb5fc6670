"""The reads and locks on a reply's time to first token as fixed SQL on PostgreSQL: compiled
by the ORM, each cost ~0.5 ms more CPU than its round trip, and a first token waits for
five of them (docs/assistants.md, "Cost"). SQLite keeps the ORM's version of each.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from functools import cache
from typing import Any

from django.db import connection
from django.db.models import Q

from messaging.models import Message, MessageType
from messaging.services import DependentUpdate

from .models import ACTIVE_STATES, Assistant, Run, RunState, TokenDay

Key = tuple[str, str]  # (tenant, assistant_id)

_ASSISTANT_FIELDS = [f.attname for f in Assistant._meta.concrete_fields]
# What a write reads of its run (the rest stays deferred): the lock of every group commit.
_RUN_WRITE_FIELDS = ["id", "tenant", "assistant_id", "conversation_id", "reply_message_id", "state", "lease_owner"]
_HISTORY_TYPES = (MessageType.TEXT, MessageType.AI)
_PARAMS = Assistant._meta.get_field("params")
_CONTENT = Message._meta.get_field("content")


def _fast() -> bool:
    return connection.vendor == "postgresql"


def _of_assistants(keys: Sequence[Key]) -> Q:
    q = Q(tenant=keys[0][0], assistant_id=keys[0][1])
    for tenant, assistant_id in keys[1:]:
        q |= Q(tenant=tenant, assistant_id=assistant_id)
    return q


def _pairs(n: int) -> str:
    return ", ".join(["(%s, %s)"] * n)


@cache
def _lock_assistants_sql(n: int, skip_locked: bool) -> str:
    columns = ", ".join(f.column for f in Assistant._meta.concrete_fields)
    return (
        f"SELECT {columns} FROM {Assistant._meta.db_table} WHERE (tenant, assistant_id) IN ({_pairs(n)})"
        f" ORDER BY tenant, assistant_id FOR UPDATE{' SKIP LOCKED' if skip_locked else ''}"
    )


def lock_assistants(keys: Sequence[Key], *, skip_locked: bool = False) -> dict[Key, Assistant]:
    """The assistants of `keys` (sorted), their rows locked in that order; with
    `skip_locked`, those another transaction holds are left out."""
    if not _fast():
        query = Assistant.objects.select_for_update(skip_locked=skip_locked).filter(_of_assistants(keys))
        return {(a.tenant, a.assistant_id): a for a in query.order_by("tenant", "assistant_id")}
    with connection.cursor() as cursor:
        cursor.execute(_lock_assistants_sql(len(keys), skip_locked), [part for key in keys for part in key])
        rows = cursor.fetchall()
    out = {}
    for row in rows:
        assistant = Assistant.from_db(connection.alias, _ASSISTANT_FIELDS, row)
        assistant.params = _PARAMS.from_db_value(assistant.params, None, connection)
        out[(assistant.tenant, assistant.assistant_id)] = assistant
    return out


@cache
def _active_runs_sql(n: int) -> str:
    return (
        "SELECT tenant, assistant_id, conversation_id, state, created_at"
        f" FROM {Run._meta.db_table} WHERE (tenant, assistant_id) IN ({_pairs(n)}) AND state IN (%s, %s)"
    )


def active_runs(keys: Sequence[Key]) -> list[tuple[str, str, str, str, Any]]:
    """(tenant, assistant_id, conversation_id, state, created_at) of the queued and running
    runs of these assistants."""
    if not _fast():
        fields = ("tenant", "assistant_id", "conversation_id", "state", "created_at")
        return list(Run.objects.filter(_of_assistants(keys), state__in=ACTIVE_STATES).values_list(*fields))
    with connection.cursor() as cursor:
        cursor.execute(_active_runs_sql(len(keys)), [*(part for key in keys for part in key), *ACTIVE_STATES])
        return cursor.fetchall()


@cache
def _lock_runs_sql() -> str:
    # The ids as one array: the same text and parameter count for any batch, parsed once.
    columns = ", ".join(Run._meta.get_field(name).column for name in _RUN_WRITE_FIELDS)
    return (
        f"SELECT {columns} FROM {Run._meta.db_table}"
        " WHERE id = ANY(%s::text[]) AND state = %s AND lease_owner = %s ORDER BY id FOR UPDATE"
    )


def lock_runs_of(owner: str, run_ids: Sequence[str]) -> dict[str, Run]:
    """The runs of `run_ids` (sorted) still running under `owner`'s lease, locked in order,
    with the fields a write uses."""
    if not _fast():
        query = Run.objects.select_for_update().filter(pk__in=run_ids, state=RunState.RUNNING, lease_owner=owner)
        return {run.pk: run for run in query.only(*_RUN_WRITE_FIELDS).order_by("pk")}
    with connection.cursor() as cursor:
        cursor.execute(_lock_runs_sql(), [list(run_ids), RunState.RUNNING, owner])
        return {row[0]: Run.from_db(connection.alias, _RUN_WRITE_FIELDS, row) for row in cursor.fetchall()}


_HISTORY_SQL = f"SELECT sender_id, content FROM {Message._meta.db_table} WHERE conversation_id = %s AND type IN (%s, %s) ORDER BY seq DESC LIMIT %s"


def _history_rows(cursor) -> list[tuple[str, Any]]:
    return [(sender, _CONTENT.from_db_value(content, None, connection)) for sender, content in cursor.fetchall()]


def recent_messages(conversation_id: str, limit: int) -> list[tuple[str, Any]]:
    """(sender_id, content) of the conversation's last `limit` text and AI messages, newest first."""
    if not _fast():
        rows = Message.objects.filter(conversation_id=conversation_id, type__in=_HISTORY_TYPES).order_by("-seq")
        return list(rows.values_list("sender_id", "content")[:limit])
    with connection.cursor() as cursor:
        cursor.execute(_HISTORY_SQL, [conversation_id, *_HISTORY_TYPES, limit])
        return _history_rows(cursor)


@cache
def _insert_runs_sql(n: int) -> str:
    """The runs' INSERT, then the history read of `recent_messages` in the same statement."""
    qn = connection.ops.quote_name
    columns = ", ".join(qn(f.column) for f in Run._meta.concrete_fields)
    row = "(" + ", ".join(["%s"] * len(Run._meta.concrete_fields)) + ")"
    return f"WITH r AS (INSERT INTO {qn(Run._meta.db_table)} ({columns}) VALUES {', '.join([row] * n)}) {_HISTORY_SQL}"


def insert_runs(runs: Sequence[Run], *, history: tuple[str, int] | None = None) -> list[tuple[str, Any]] | None:
    """Insert `runs`; with `history` (conversation_id, limit), also return that conversation's
    `recent_messages`, read in the INSERT's statement on PostgreSQL (a send that starts its
    run reads its history: one round trip fewer before the model is called)."""
    if not _fast() or history is None:
        Run.objects.bulk_create(runs)
        return recent_messages(*history) if history else None
    fields = Run._meta.concrete_fields
    params = [f.get_db_prep_save(f.pre_save(run, True), connection) for run in runs for f in fields]
    conversation_id, limit = history
    with connection.cursor() as cursor:
        cursor.execute(_insert_runs_sql(len(runs)), [*params, conversation_id, *_HISTORY_TYPES, limit])
        return _history_rows(cursor)


_ADD_TOKENS_SQL = (
    f"INSERT INTO {TokenDay._meta.db_table} (tenant, day, tokens) VALUES (%s, %s, %s)"
    f" ON CONFLICT (tenant, day) DO UPDATE SET tokens = {TokenDay._meta.db_table}.tokens + excluded.tokens"
)


def add_tokens(used: dict[str, int], day: date) -> None:
    """Add each tenant's tokens to its counter of `day`, in tenant order: these rows are the
    last a run's write locks, always in one order, so two writes never wait in a cycle."""
    with connection.cursor() as cursor:
        for tenant in sorted(used):
            if used[tenant] > 0:
                cursor.execute(_ADD_TOKENS_SQL, [tenant, connection.ops.adapt_datefield_value(day), used[tenant]])


def tokens_on(tenant: str, day: date) -> int:
    return TokenDay.objects.filter(tenant=tenant, day=day).values_list("tokens", flat=True).first() or 0


def reply_recorded(run_id: str, now: datetime) -> DependentUpdate:
    """The run's record of its reply (id, time of the first token), written by the reply's
    INSERT statement (one round trip fewer on the time to first token)."""
    first_token_at = connection.ops.adapt_datetimefield_value(now)
    return DependentUpdate(table=Run._meta.db_table, key=("id", run_id), message_id_column="reply_message_id", values=(("first_token_at", first_token_at),))
