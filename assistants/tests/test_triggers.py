"""A triggering send in a process whose runner has room starts its run in the send
transaction and hands it to that runner after the commit (triggers, execution.claim_new);
anything that does not fit stays queued for the runner's claim."""

from __future__ import annotations

import asyncio

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from aiim_project.core.db import in_worker
from assistants import execution, wake
from assistants.models import Assistant, Run, RunState
from messaging import services
from tests.support.database import row_locked_elsewhere

pytestmark = pytest.mark.django_db(transaction=True)


class RecordingRunner:
    """Stands in for this loop's runner (the wake.LocalRunner protocol): records what it is given."""

    owner = "this-process"

    def __init__(self) -> None:
        self.free = 10
        self.adopted: list[tuple[Run, object]] = []
        self.woken = 0

    def free_slots(self) -> int:
        return self.free

    def wake(self) -> None:
        self.woken += 1

    def adopt(self, items) -> None:
        self.adopted.extend(items)


@pytest.fixture
async def local_runner():
    loop = asyncio.get_running_loop()
    runner = RecordingRunner()
    wake.register(loop, runner)
    yield runner
    wake.unregister(loop)


@pytest.fixture
def conversation(make_assistant, make_conversation):
    def make(creator="alice", others=("bot",), type="direct", **assistant):
        if not Assistant.objects.filter(assistant_id="bot").exists():
            make_assistant("bot", **assistant)
        return make_conversation(creator, list(others), type=type)

    return in_worker(make)


async def send(conversation, text: str, sender: str = "alice"):
    message, _ = await in_worker(services.message_send)(tenant="default", sender=sender, conversation_id=conversation.id, content=text)
    await asyncio.sleep(0.05)  # the hand-over is a call_soon_threadsafe onto this loop
    return message


async def runs_of(conversation) -> list[Run]:
    return await in_worker(lambda: list(Run.objects.filter(conversation_id=conversation.id).order_by("created_at", "id")))()


async def test_the_send_starts_the_run_and_hands_it_over_prepared(conversation, local_runner):
    conv = await conversation(system_prompt="Be brief.", params={"temperature": 0.2})

    message = await send(conv, "hello bot")

    [run] = await runs_of(conv)
    assert (run.state, run.lease_owner, run.trigger_message_id) == (RunState.RUNNING, "this-process", message.id)
    assert run.started_at is not None and run.lease_expires_at is not None
    [(adopted, prepared)] = local_runner.adopted
    assert adopted.id == run.id
    assert isinstance(prepared, execution.Prepared) and prepared.params == {"temperature": 0.2}
    assert prepared.messages == [{"role": "system", "content": "Be brief."}, {"role": "user", "name": "alice", "content": "hello bot"}]
    assert local_runner.woken == 0  # nothing queued: no claim to make


async def test_without_a_free_slot_the_run_is_queued_for_the_claim(conversation, local_runner):
    conv = await conversation()
    local_runner.free = 0

    await send(conv, "hello bot")

    [run] = await runs_of(conv)
    assert (run.state, run.lease_owner) == (RunState.QUEUED, None)
    assert local_runner.adopted == [] and local_runner.woken == 1


async def test_the_assistants_limits_hold_at_the_send(conversation, local_runner):
    first = await conversation(max_concurrent_runs=1)
    second = await conversation(creator="bob")

    await send(first, "one", sender="alice")
    await send(first, "two", sender="alice")  # one active run per conversation
    await send(second, "three", sender="bob")  # max_concurrent_runs = 1

    assert [r.state for r in await runs_of(first)] == [RunState.RUNNING, RunState.QUEUED]
    assert [r.state for r in await runs_of(second)] == [RunState.QUEUED]
    assert len(local_runner.adopted) == 1 and local_runner.woken == 2


async def test_a_send_that_rolls_back_hands_nothing_over(conversation, local_runner):
    conv = await conversation()

    def send_then_fail():
        with transaction.atomic():
            services.message_send(tenant="default", sender="alice", conversation_id=conv.id, content="hello")
            raise RuntimeError("after the trigger")

    with pytest.raises(RuntimeError):
        await in_worker(send_then_fail)()
    await asyncio.sleep(0.05)

    assert await runs_of(conv) == [] and local_runner.adopted == [] and local_runner.woken == 0


@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks: SQLite serializes every writer instead")
async def test_a_send_does_not_wait_for_an_assistant_row_another_transaction_holds(conversation, local_runner):
    conv = await conversation()
    async with row_locked_elsewhere(Assistant._meta.db_table, "assistant_id", "bot"):
        await asyncio.wait_for(send(conv, "hello bot"), 5)  # not held up by the lock
        [run] = await runs_of(conv)
        assert run.state == RunState.QUEUED and local_runner.adopted == [] and local_runner.woken == 1


async def test_a_send_behind_a_queued_run_of_its_conversation_queues_its_own(conversation, local_runner):
    conv = await conversation()
    local_runner.free = 0
    await send(conv, "one")  # queued: no slot here
    local_runner.free = 10  # a slot came back before the runner claimed

    await send(conv, "two")

    assert [r.state for r in await runs_of(conv)] == [RunState.QUEUED, RunState.QUEUED]  # first in, first out
    assert local_runner.adopted == [] and local_runner.woken == 2


async def test_a_send_that_starts_its_run_reads_the_history_with_the_runs_insert(conversation, local_runner):
    conv = await conversation(history_limit=2)
    await send(conv, "one")
    await in_worker(Run.objects.filter(conversation_id=conv.id).update)(state=RunState.COMPLETED)

    def send_counting():
        with CaptureQueriesContext(connection) as queries:
            services.message_send(tenant="default", sender="alice", conversation_id=conv.id, content="two")
        return [q["sql"] for q in queries.captured_queries]

    statements = await in_worker(send_counting)()
    await asyncio.sleep(0.05)

    # PostgreSQL: BEGIN, the lock, the message, the trigger, the assistants' lock, their
    # active runs, the run with the history, COMMIT
    history = [sql for sql in statements if "ORDER BY" in sql and "messaging_message" in sql and "LIMIT" in sql]
    if connection.vendor == "postgresql":
        assert len(statements) == 8 and len(history) == 1 and "INSERT INTO" in history[0]
    else:
        assert len(history) == 1 and "INSERT INTO" not in history[0]
    _, (_, prepared) = local_runner.adopted
    assert [m["content"] for m in prepared.messages] == ["one", "two"]


@pytest.mark.parametrize(
    ("text", "mentioned"),
    [
        ("thanks @bot.", True),  # a sentence's full stop ends the id
        ("@bot. what now?", True),
        ("ask @bot, please", True),
        ("(@bot)", True),
        ("@bot.v2 is another assistant", False),  # a dot that an id goes on after
        ("@bot2", False),
        ("@bot-x", False),
        ("mail@bot.com", False),
        ("no mention", False),
    ],
)
def test_a_mention_ends_where_the_assistant_id_cannot_go_on(text, mentioned):
    from assistants.triggers import mentions
    from messaging.models import Message

    assert mentions(Message(content=text, metadata={}), "bot") is mentioned
