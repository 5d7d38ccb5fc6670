"""The runner's writer (assistants.chunk_writer): flushes of replies already streaming are
group-committed; a reply's first write is its own transaction beside that group."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta

import psycopg
import pytest
from django.db import connection
from django.utils import timezone

from aiim_project.core.db import in_worker
from assistants import execution
from assistants.chunk_writer import ChunkWriter
from assistants.execution import ChunkWrite
from assistants.models import Run, RunState
from messaging.models import Message

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


@pytest.fixture
def hold_row():
    """Hold a run's row lock from another connection until released."""
    held, release, threads = threading.Event(), threading.Event(), []

    def hold(run_id: str) -> None:
        settings = connection.settings_dict
        with psycopg.connect(host=settings["HOST"] or None, port=settings["PORT"] or None, user=settings["USER"], dbname=settings["NAME"]) as other:
            other.execute(f"SELECT 1 FROM {Run._meta.db_table} WHERE id = %s FOR UPDATE", [run_id])
            held.set()
            release.wait(10)

    def start(run_id: str) -> threading.Event:
        thread = threading.Thread(target=hold, args=(run_id,))
        thread.start()
        threads.append(thread)
        assert held.wait(5)
        return release

    yield start
    release.set()
    for thread in threads:
        thread.join(10)


async def test_a_reply_starts_while_the_group_commit_waits(make_assistant, make_conversation, hold_row):
    def setup() -> tuple[Run, Run]:
        make_assistant("bot")
        streaming = _running_run(make_conversation("alice", ["bot"]).id)
        execution.write_chunk(owner="me", write=ChunkWrite(run_id=streaming.id, text="first", start=True))
        return streaming, _running_run(make_conversation("bob", ["bot"]).id)

    streaming, starting = await in_worker(setup)()
    writer = ChunkWriter("me")
    release = await asyncio.to_thread(hold_row, streaming.id)

    group = asyncio.ensure_future(writer.write(ChunkWrite(run_id=streaming.id, text=" more")))
    await asyncio.sleep(0.2)
    assert not group.done()  # the group commit waits for the held run

    assert await asyncio.wait_for(writer.write(ChunkWrite(run_id=starting.id, text="hello", start=True)), 5) is True
    assert await in_worker(_reply_text)(starting.id) == "hello"

    release.set()
    assert await asyncio.wait_for(group, 5) is True
    assert await in_worker(_reply_text)(streaming.id) == "first more"
