"""The runner's claim (execution.claim_runs): which queued runs start, within each assistant's
limits, in a fixed number of statements however many are claimed; its writes, and the daily
token counters they keep for the budget."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from assistants import execution
from assistants.models import Run, RunState, TokenDay
from messaging.models import Message

pytestmark = pytest.mark.django_db


def queued(assistant_id: str, conversation_id: str, tenant: str = "default") -> Run:
    return Run.objects.create(tenant=tenant, assistant_id=assistant_id, conversation_id=conversation_id)


def states() -> dict[str, tuple[str, str | None]]:
    return {run.id: (run.state, run.lease_owner) for run in Run.objects.all()}


def test_a_burst_is_claimed_within_every_limit_oldest_first(make_assistant):
    make_assistant("a", max_concurrent_runs=2, params={"temperature": 0.2})
    make_assistant("b", max_concurrent_runs=1)
    a_c1_first, a_c1_second = queued("a", "c1"), queued("a", "c1")
    a_c2, a_c3 = queued("a", "c2"), queued("a", "c3")
    b_c1, b_c2 = queued("b", "c1"), queued("b", "c2")

    claimed = execution.claim_runs(owner="me", limit=10)

    # a: its limit of 2, the older run of c1 first; b: its limit of 1, also in c1.
    assert [run.id for run in claimed] == [a_c1_first.id, a_c2.id, b_c1.id]
    assert all(run.claimed_assistant.assistant_id == run.assistant_id for run in claimed)
    assert claimed[0].claimed_assistant.params == {"temperature": 0.2}  # read as JSON, as the model gets it
    after = states()
    for run in claimed:
        assert after[run.id] == (RunState.RUNNING, "me")
    for run in (a_c1_second, a_c3, b_c2):
        assert after[run.id] == (RunState.QUEUED, None)


def test_runs_already_running_count_against_the_limits(make_assistant):
    make_assistant("a", max_concurrent_runs=2)
    first = queued("a", "c1")
    assert [run.id for run in execution.claim_runs(owner="one", limit=10)] == [first.id]
    waiting_here, other = queued("a", "c1"), queued("a", "c2")
    third = queued("a", "c3")

    claimed = execution.claim_runs(owner="two", limit=10)

    # c1 has a running run: its next one waits; c2 takes the second slot; c3 is over the limit.
    assert [run.id for run in claimed] == [other.id]
    assert states()[waiting_here.id] == states()[third.id] == (RunState.QUEUED, None)


def test_the_limit_argument_and_a_deleted_assistant(make_assistant):
    make_assistant("a", max_concurrent_runs=10)
    runs = [queued("a", f"c{k}") for k in range(3)]
    orphan = queued("gone", "c9")

    assert [run.id for run in execution.claim_runs(owner="me", limit=2)] == [run.id for run in runs[:2]]

    assert [run.id for run in execution.claim_runs(owner="me", limit=2)] == [runs[2].id]
    orphan.refresh_from_db()
    assert (orphan.state, orphan.error_code) == (RunState.FAILED, "assistant_missing")


def test_another_tenants_assistant_of_the_same_id_is_not_used(make_assistant):
    make_assistant("a", tenant="t1", max_concurrent_runs=1)
    busy = queued("a", "c1", tenant="t1")
    execution.claim_runs(owner="me", limit=10)
    make_assistant("a", tenant="t2", max_concurrent_runs=1)
    other_tenant = queued("a", "c1", tenant="t2")

    claimed = execution.claim_runs(owner="me", limit=10)

    # t1's running run neither counts against t2's limit nor lends t2 its assistant row.
    assert [(run.id, run.claimed_assistant.tenant) for run in claimed] == [(other_tenant.id, "t2")]
    assert states()[busy.id] == (RunState.RUNNING, "me")


def test_the_claim_costs_the_same_statements_for_one_run_or_many(make_assistant, django_assert_num_queries):
    make_assistant("a", max_concurrent_runs=20)
    make_assistant("b", max_concurrent_runs=20)
    queued("a", "c0")
    with django_assert_num_queries(6) as one:  # savepoint, runs, assistants, active runs, update, release
        assert len(execution.claim_runs(owner="me", limit=10)) == 1
    for k in range(8):
        queued("a" if k % 2 else "b", f"c{k + 1}")
    with django_assert_num_queries(len(one.captured_queries)):
        assert len(execution.claim_runs(owner="me", limit=10)) == 8


@pytest.mark.parametrize("replies", [1, 3])
def test_replies_started_in_one_write_are_recorded_on_their_runs(replies, make_assistant, make_conversation, send):
    make_assistant("bot", reply_in="always", max_concurrent_runs=10)
    for k in range(replies):
        send(make_conversation(f"user{k}", ["bot"], type="direct"), sender=f"user{k}", content=f"hello {k}")
    runs = execution.claim_runs(owner="me", limit=10)
    assert len(runs) == replies

    ok = execution.write_chunks(owner="me", writes=[execution.ChunkWrite(run_id=run.id, text=f"reply {run.id}") for run in runs])

    assert ok == [True] * replies
    for run in Run.objects.filter(pk__in=[r.id for r in runs]):
        reply = Message.objects.get(pk=run.reply_message_id)
        assert (reply.sender_id, reply.conversation_id, reply.content) == ("bot", run.conversation_id, f"reply {run.id}")
        assert run.first_token_at is not None


def test_a_batch_of_appends_reads_its_runs_once(make_assistant, make_conversation, send):
    make_assistant("bot", reply_in="always", max_concurrent_runs=10)
    for k in range(3):
        send(make_conversation(f"user{k}", ["bot"], type="direct"), sender=f"user{k}", content=f"hello {k}")
    runs = execution.claim_runs(owner="me", limit=10)
    assert execution.write_chunks(owner="me", writes=[execution.ChunkWrite(run_id=run.id, text="a") for run in runs]) == [True] * 3

    with CaptureQueriesContext(connection) as one:
        assert execution.write_chunks(owner="me", writes=[execution.ChunkWrite(run_id=runs[0].id, text="b")]) == [True]
    with CaptureQueriesContext(connection) as three:
        assert execution.write_chunks(owner="me", writes=[execution.ChunkWrite(run_id=run.id, text="c") for run in runs]) == [True] * 3

    def of_runs(queries) -> int:  # the lock; no field of a run read lazily, per run
        return sum(1 for q in queries.captured_queries if "assistants_run" in q["sql"])

    assert of_runs(one) == of_runs(three) == 1
    if connection.vendor == "postgresql":  # one statement appends for every run (SQLite: one by one)
        assert len(three.captured_queries) == len(one.captured_queries)
    for run in Run.objects.filter(pk__in=[r.id for r in runs]):
        assert Message.objects.get(pk=run.reply_message_id).content == ("abc" if run.id == runs[0].id else "ac")


def _tokens_today() -> dict[str, int]:
    return dict(TokenDay.objects.filter(day=timezone.now().date()).values_list("tenant", "tokens"))


def test_recorded_usage_adds_to_the_tenants_counter_of_the_day(make_assistant, make_conversation, send):
    for tenant in ("default", "other"):
        make_assistant("bot", tenant=tenant, reply_in="always", max_concurrent_runs=10)
    for k in range(3):
        send(make_conversation(f"user{k}", ["bot"], type="direct"), sender=f"user{k}", content=f"hello {k}")
    theirs = make_conversation("eve", ["bot"], type="direct", tenant="other")
    send(theirs, sender="eve", content="hi", tenant="other")
    runs = execution.claim_runs(owner="me", limit=10)
    by_tenant = {run.tenant: run for run in runs}
    mine = [run for run in runs if run.tenant == "default"]
    usage = execution.Usage(prompt_tokens=10, completion_tokens=5, estimated=False)

    # Two of ours and theirs end in one group commit; the third of ours fails; then a stop.
    ends = [execution.ChunkWrite(run_id=run.id, text="done", end=True, usage=usage) for run in (*mine[:2], by_tenant["other"])]
    assert execution.write_chunks(owner="me", writes=ends) == [True] * 3
    assert _tokens_today() == {"default": 30, "other": 15}
    assert execution.fail(run_id=mine[2].id, owner="me", code="model_error", detail="x", usage=execution.Usage(1, 2, True))
    assert _tokens_today() == {"default": 33, "other": 15}

    assert sum(Run.objects.filter(tenant="default").values_list("total_tokens", flat=True)) == 33


def test_a_stopped_runs_usage_counts_once(make_assistant, make_conversation, send):
    from assistants import services

    make_assistant("bot", reply_in="always")
    conversation = make_conversation("alice", ["bot"], type="direct")
    send(conversation, sender="alice", content="hello")
    (run,) = execution.claim_runs(owner="me", limit=10)
    services.run_stop(tenant="default", user_id="alice", run_id=run.id)
    usage = execution.Usage(prompt_tokens=7, completion_tokens=3, estimated=True)

    execution.record_usage(run=run, owner="me", usage=usage)
    execution.record_usage(run=run, owner="me", usage=usage)
    execution.record_usage(run=run, owner="another runner", usage=usage)

    assert _tokens_today() == {"default": 10}
    assert Run.objects.get(pk=run.id).total_tokens == 10


def test_the_budget_check_reads_one_counter(make_assistant, make_conversation, send, settings, django_assert_num_queries):
    settings.ASSISTANT_DAILY_TOKENS = 100
    assistant = make_assistant("bot", reply_in="always", max_concurrent_runs=10)
    send(make_conversation("alice", ["bot"], type="direct"), sender="alice", content="hello")
    (run,) = execution.claim_runs(owner="me", limit=10)
    TokenDay.objects.create(tenant="other", day=timezone.now().date(), tokens=1000)  # another tenant's day
    with django_assert_num_queries(2):  # the counter, the history
        assert execution.prepare(run=run, assistant=assistant).model == "fake-1"

    TokenDay.objects.create(tenant="default", day=timezone.now().date(), tokens=100)
    with pytest.raises(execution.RunFailed) as failed:
        execution.prepare(run=run, assistant=assistant)
    assert failed.value.code == "budget_exhausted"


def test_a_replys_first_write_records_it_on_its_run_in_the_reply_statement(make_assistant, make_conversation, send):
    make_assistant("bot", reply_in="always")
    send(make_conversation("alice", ["bot"], type="direct"), sender="alice", content="hello")
    (run,) = execution.claim_runs(owner="me", limit=10)

    with CaptureQueriesContext(connection) as first:
        assert execution.write_chunks(owner="me", writes=[execution.ChunkWrite(run_id=run.id, text="hi")]) == [True]

    stored = Run.objects.get(pk=run.id)
    assert Message.objects.get(pk=stored.reply_message_id).content == "hi"
    assert stored.first_token_at is not None and stored.first_token_at >= stored.started_at
    if connection.vendor == "postgresql":
        # The run's lock, the conversation's lock, then one statement: message, chunk, last_seq, run.
        statements = [q["sql"] for q in first.captured_queries if "SAVEPOINT" not in q["sql"]]  # the test's transaction
        assert len(statements) == 3, statements
        assert "INSERT INTO" in statements[2] and "UPDATE assistants_run SET reply_message_id = m.id" in statements[2]
