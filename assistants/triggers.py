"""Which stored human messages start a run: messaging's post-store hook (messaging.hooks).

Runs in the send transaction, so a run row commits exactly with its trigger. The common case
(a tenant without assistants) costs no query: whether a tenant has any assistant is cached
per process for TENANT_CACHE_SECONDS (a process that creates one forgets its entry at once;
another process may miss a trigger for that long after the tenant's FIRST assistant). A
short TTL would put the check back on the send path about once a second per tenant.

When this process runs a runner with free slots, the runs that may start at once start in
the send transaction itself (`execution.claim_new`), with their history, and go straight to
that runner after the commit: one transaction less before the model is called
(docs/assistants.md).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from functools import lru_cache, partial

from django.db import connection, transaction

from aiim_project.core import events
from messaging.models import Conversation, ConversationType, Member, Message

from . import execution, storage, wake
from .models import Assistant, ReplyIn, Run
from .rendering import state_event

TENANT_CACHE_SECONDS = 5.0
_tenants: dict[str, tuple[bool, float]] = {}


def forget_tenant(tenant: str) -> None:
    _tenants.pop(tenant, None)


def _tenant_has_assistants(tenant: str) -> bool:
    now = time.monotonic()
    hit = _tenants.get(tenant)
    if hit is not None and hit[1] > now:
        return hit[0]
    if len(_tenants) > 10000:
        _tenants.clear()
    has = Assistant.objects.filter(tenant=tenant).exists()
    _tenants[tenant] = (has, now + TENANT_CACHE_SECONDS)
    return has


def mentions(message: Message, assistant_id: str) -> bool:
    listed = (message.metadata or {}).get("mentions") if isinstance(message.metadata, dict) else None
    if isinstance(listed, list) and assistant_id in listed:
        return True
    text = message.content if isinstance(message.content, str) else None
    if text is None and isinstance(message.content, dict) and isinstance(message.content.get("text"), str):
        text = message.content["text"]
    # "@bot" must not match inside "@bot2" or "@bot.v2": the id ends at a character that
    # cannot continue it; a dot continues it only when an id character follows ("@bot." ends
    # a sentence).
    return bool(text) and re.search(rf"@{re.escape(assistant_id)}(?![\w-]|\.[\w-])", text) is not None


def should_reply(assistant_id: str, reply_in: str, conversation_type: str, message: Message) -> bool:
    if reply_in == ReplyIn.ALWAYS or conversation_type == ConversationType.DIRECT:
        return True
    return mentions(message, assistant_id)


@lru_cache(maxsize=64)
def _assistants_sql(senders: int) -> str:
    """The tenant's assistants that are members here or among the senders, with their
    membership and the conversation's type: one fixed statement on every send of a tenant
    with assistants (the ORM's three queries were a fifth of the send transaction)."""
    a, m, c = Assistant._meta.db_table, Member._meta.db_table, Conversation._meta.db_table
    return (
        "SELECT a.assistant_id, a.reply_in,"
        f" EXISTS (SELECT 1 FROM {m} x WHERE x.conversation_id = %s AND x.user_id = a.assistant_id),"
        f" (SELECT c.type FROM {c} c WHERE c.id = %s)"
        f" FROM {a} a WHERE a.tenant = %s AND (a.assistant_id IN (SELECT y.user_id FROM {m} y WHERE y.conversation_id = %s)"
        f" OR a.assistant_id IN ({', '.join(['%s'] * senders)}))"
    )


def messages_stored(tenant: str, messages: Sequence[Message]) -> None:
    if not messages or not _tenant_has_assistants(tenant):
        return
    conversation_id = messages[0].conversation_id
    senders = sorted({m.sender_id for m in messages})
    with connection.cursor() as cursor:
        cursor.execute(_assistants_sql(len(senders)), [conversation_id, conversation_id, tenant, conversation_id, *senders])
        rows = cursor.fetchall()
    members = [(assistant_id, reply_in) for assistant_id, reply_in, is_member, _ in rows if is_member]
    if not members:
        return
    conversation_type = rows[0][3]
    # An assistant of the tenant that is not in this conversation is still not a human.
    humans = set(senders) - {assistant_id for assistant_id, *_ in rows}
    runs = [
        Run(tenant=tenant, assistant_id=assistant_id, conversation_id=conversation_id, trigger_message_id=m.id)
        for m in messages
        if m.sender_id in humans
        for assistant_id, reply_in in members
        if should_reply(assistant_id, reply_in, conversation_type, m)
    ]
    if not runs:
        return
    local = wake.local()
    started = execution.claim_new(runs=runs, owner=local[1].owner, limit=local[1].free_slots()) if local else []
    # Read under the send's conversation lock: the history ends exactly at the trigger.
    recent = storage.insert_runs(runs, history=(conversation_id, execution.history_needed(started)) if started else None)
    events.publish_all_on_commit(
        [
            state_event(tenant=tenant, conversation_id=conversation_id, assistant_id=r.assistant_id, run_id=r.id, state="queued")
            for r in runs
        ]
    )
    if started:
        transaction.on_commit(partial(wake.hand_over, *local, execution.prepare_all(started, recent=recent)), robust=True)
    if len(started) < len(runs):
        transaction.on_commit(wake.wake, robust=True)
