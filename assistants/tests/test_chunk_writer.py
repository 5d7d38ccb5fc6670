"""The runner's writer (assistants.chunk_writer): flushes of replies already streaming are
group-committed; a reply's first write is its own transaction beside that group."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from aiim_project.core.db import in_worker
from assistants import execution
from assistants.chunk_writer import ChunkWriter
from assistants.execution import ChunkWrite
from assistants.models import Run, RunState
from messaging.models import Message
from tests.support.database import row_locked_elsewhere

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks: SQLite serializes every writer instead"),
]


def _running_run(conversation_id: str) -> Run:
    lease = timezone.now() + timedelta(seconds=60)
    return Run.objects.create(
        tenant="default", assistant_id="bot", conversation_id=conversation_id, state=RunState.RUNNING, lease_owner="me", lease_expires_at=lease
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
