"""The runner's writer (assistants.chunk_writer): flushes of replies already streaming are
group-committed; a reply's first write is its own transaction beside that group; whatever
else locks several runs (the lease renewal, a stop) locks them in the group's order."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from aiim_project.core.db import in_worker
from assistants import execution, services
from assistants.chunk_writer import ChunkWriter
from assistants.execution import ChunkWrite
from assistants.models import Run, RunState
from messaging.models import Message
from tests.support.database import row_locked_elsewhere

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks: SQLite serializes every writer instead"),
]


def _running_run(conversation_id: str, run_id: str | None = None, assistant_id: str = "bot") -> Run:
    lease = timezone.now() + timedelta(seconds=60)
    return Run.objects.create(
        **({"id": run_id} if run_id else {}),
        tenant="default", assistant_id=assistant_id, conversation_id=conversation_id, state=RunState.RUNNING, lease_owner="me", lease_expires_at=lease,
    )


def _reply_text(run_id: str) -> str | None:
    reply = Run.objects.get(pk=run_id).reply_message_id
    return Message.objects.get(pk=reply).content if reply else None


async def test_a_reply_starts_while_the_group_commit_waits(make_assistant, make_conversation):
    def setup() -> tuple[Run, Run]:
        make_assistant("bot")
        streaming = _running_run(make_conversation("alice", ["bot"]).id)
        execution.write_chunk(owner="me", write=ChunkWrite(run_id=streaming.id, text="first", start=True))
        return streaming, _running_run(make_conversation("bob", ["bot"]).id)

    streaming, starting = await in_worker(setup)()
    writer = ChunkWriter("me")
    async with row_locked_elsewhere(Run._meta.db_table, "id", streaming.id):
        group = asyncio.ensure_future(writer.write(ChunkWrite(run_id=streaming.id, text=" more")))
        await asyncio.sleep(0.2)
        assert not group.done()  # the group commit waits for the held run

        assert await asyncio.wait_for(writer.write(ChunkWrite(run_id=starting.id, text="hello", start=True)), 5) is True
        assert await in_worker(_reply_text)(starting.id) == "hello"

    assert await asyncio.wait_for(group, 5) is True
    assert await in_worker(_reply_text)(streaming.id) == "first more"


def _started_run(conversation_id: str, run_id: str, assistant_id: str = "bot") -> Run:
    """A running run of `me` whose reply has its first text."""
    run = _running_run(conversation_id, run_id=run_id, assistant_id=assistant_id)
    execution.write_chunk(owner="me", write=ChunkWrite(run_id=run.id, text="first", start=True))
    return run


async def _beside_a_waiting_group_commit(low: Run, high: Run, other: Callable[[], Any]) -> Any:
    """`other` on a worker thread while a group commit over `low` and `high` waits for `low`
    (held by another connection, first in id order); once `low` is free both must finish.
    `other`'s result."""
    async with row_locked_elsewhere(Run._meta.db_table, "id", low.id):
        group = asyncio.ensure_future(in_worker(execution.write_chunks)(owner="me", writes=[ChunkWrite(run_id=r.id, text=" more") for r in (low, high)]))
        await asyncio.sleep(0.2)
        beside = asyncio.ensure_future(in_worker(other)())
        await asyncio.sleep(0.2)
        assert not group.done() and not beside.done()
    assert await asyncio.wait_for(group, 10) == [True, True]
    return await asyncio.wait_for(beside, 10)


async def test_a_lease_renewal_and_a_group_commit_over_the_same_runs_do_not_deadlock(make_assistant, make_conversation):
    """The renewal used to UPDATE the runs in the order it found them (here the higher id,
    stored first), the group commit locks them in id order: each held a run the other waited
    for, and PostgreSQL broke the cycle after deadlock_timeout (1 s) with an error."""

    def setup() -> tuple[Run, Run]:
        make_assistant("bot")
        high = _started_run(make_conversation("alice", ["bot"]).id, "f" * 32)
        return _started_run(make_conversation("bob", ["bot"]).id, "0" * 32), high

    low, high = await in_worker(setup)()
    renewed_from = timezone.now() + timedelta(seconds=settings.ASSISTANT_LEASE_SECONDS)

    renewed = await _beside_a_waiting_group_commit(low, high, partial(execution.renew, owner="me", run_ids=[high.id, low.id]))

    assert renewed == {low.id, high.id}
    assert await in_worker(_reply_text)(high.id) == "first more"
    assert all(run.lease_expires_at > renewed_from for run in await in_worker(lambda: list(Run.objects.all()))())


async def test_a_stop_of_every_run_and_a_group_commit_over_them_do_not_deadlock(make_assistant, make_conversation):
    """The stop used to lock a conversation's runs oldest first (here the higher id), the
    group commit locks them in id order: the same cycle as the renewal's."""

    def setup() -> tuple[str, Run, Run]:
        make_assistant("bot")
        make_assistant("bot2")
        conversation = make_conversation("alice", ["bot", "bot2"]).id
        high = _started_run(conversation, "f" * 32, assistant_id="bot")
        return conversation, _started_run(conversation, "0" * 32, assistant_id="bot2"), high

    conversation, low, high = await in_worker(setup)()

    stopped = await _beside_a_waiting_group_commit(
        low, high, partial(services.conversation_runs_stop, tenant="default", user_id="alice", conversation_id=conversation)
    )

    assert [run.id for run in stopped] == [high.id, low.id]  # stopped oldest first
    for run in (low, high):
        assert await in_worker(_reply_text)(run.id) == "first more"
        assert await in_worker(lambda r=run: Run.objects.get(pk=r.id).state)() == RunState.STOPPED
