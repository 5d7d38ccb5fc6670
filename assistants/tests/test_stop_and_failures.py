"""Stop (WebSocket and REST), failures of the model, limits: a real loopback model server,
the real gateway in process, the real database and channel layer."""

from __future__ import annotations

import asyncio
import time

import pytest
from channels.db import database_sync_to_async

from assistants.fake_model import Script
from assistants.models import Run, RunState
from messaging.models import Message
from tests.support.communicator import connect, subscribe
from tests.support.runs import drain, ended, events_until, send, states, wait_run

pytestmark = pytest.mark.django_db(transaction=True)

SLOW = " ".join(f"word{k}" for k in range(60))


@pytest.fixture
def setup(make_assistant, make_conversation, fake):
    def make(type="direct", others=("bot",), conv_creator="alice", **assistant):
        if not assistant.pop("skip_assistant", False):
            make_assistant(base_url=assistant.pop("base_url", fake.base_url), **assistant)
        return make_conversation(conv_creator, list(others), type=type)

    return database_sync_to_async(make)


async def _generating(comm):
    return await events_until(comm, lambda d: d["event"] == "message.stream_chunk")


async def _wait_disconnect(fake, timeout=1.0):
    deadline = time.monotonic() + timeout
    while not fake.disconnects:
        assert time.monotonic() < deadline, "the model server saw no disconnect within 1 s"
        await asyncio.sleep(0.01)
    return fake.disconnects[-1]


async def test_stop_over_websocket_closes_the_model_request(setup, fake, runner):
    conv = await setup()
    fake.queue(Script(text=SLOW, delay=0.1))
    alice = await connect("alice")
    await subscribe(alice, conv.id)
    await send(alice, conv.id, "go")
    await _generating(alice)
    run = (await wait_run(conv.id, lambda rs: rs[0].state == "running"))[0]
    stop_sent = time.time()
    await alice.send_json_to({"type": "stop_run", "conversation_id": conv.id, "run_id": run.id, "req_id": "r1"})
    frames = []
    while not (frames and frames[-1].get("type") == "ack"):
        frames.append(await alice.receive_json_from(timeout=5))
    assert frames[-1] == {"type": "ack", "event": "run.stopped", "conversation_id": conv.id, "run_ids": [run.id], "req_id": "r1"}
    seen = [f["data"] for f in frames if f.get("type") == "event"]
    if not any(ended(e) for e in seen):
        seen += await events_until(alice, ended)
    seen += await drain(alice)
    assert (await _wait_disconnect(fake)) - stop_sent < 1.0
    final = next(e for e in seen if ended(e))["message"]
    assert final["stream"]["state"] == "stopped"
    assert final["content"] and SLOW.startswith(final["content"]) and final["content"] != SLOW
    run = await Run.objects.aget(pk=run.id)
    assert run.state == RunState.STOPPED and run.finish_reason == "stopped" and run.ended_at
    assert states(seen)[-1] == "idle"
    assert fake.completed == 0
    await asyncio.sleep(0.3)  # nothing is written after the stop
    stored = await Message.objects.aget(pk=final["message_id"])
    assert (stored.content, stored.stream_state) == (final["content"], "stopped")
    await alice.disconnect()


async def test_stop_over_rest(setup, fake, runner, api):
    conv = await setup()
    fake.queue(Script(text=SLOW, delay=0.1))
    alice = await connect("alice")
    await subscribe(alice, conv.id)
    await send(alice, conv.id, "go")
    await _generating(alice)
    run = (await wait_run(conv.id, lambda rs: rs[0].state == "running"))[0]
    stop_sent = time.time()
    response = await database_sync_to_async(lambda: api("alice").post(f"/api/aiim/runs/{run.id}/stop"))()
    assert response.status_code == 200 and response.json()["state"] == "stopped"
    assert (await _wait_disconnect(fake)) - stop_sent < 1.0
    again = await database_sync_to_async(lambda: api("alice").post(f"/api/aiim/runs/{run.id}/stop"))()
    assert again.status_code == 409
    message = await Message.objects.aget(type="ai")
    assert message.stream_state == "stopped" and SLOW.startswith(message.content)
    await alice.disconnect()


async def test_stop_while_queued_never_calls_the_model(setup, fake, settings):
    conv = await setup()
    alice = await connect("alice")
    await subscribe(alice, conv.id)
    await send(alice, conv.id, "go")
    run = (await wait_run(conv.id, lambda rs: rs[0].state == "queued"))[0]
    reply = None
    await alice.send_json_to({"type": "stop_run", "conversation_id": conv.id})
    while reply is None:
        frame = await alice.receive_json_from(timeout=5)
        if frame.get("type") == "ack" and frame.get("event") == "run.stopped":
            reply = frame
    assert reply["run_ids"] == [run.id]
    # a runner starting now finds nothing to do
    from assistants.runner import Runner

    settings.ASSISTANT_POLL_INTERVAL = 0.05
    task = asyncio.get_running_loop().create_task(Runner().run_forever())
    await asyncio.sleep(0.4)
    task.cancel()
    assert fake.requests == []
    assert (await Run.objects.aget(pk=run.id)).state == RunState.STOPPED
    await alice.send_json_to({"type": "stop_run", "conversation_id": conv.id, "run_id": run.id})
    while True:
        frame = await alice.receive_json_from(timeout=5)
        if frame.get("type") == "error":
            assert frame["code"] == "conflict"
            break
    await alice.disconnect()


CASES = {
    "refused": (None, "model_unavailable", 0),
    "http_500": ([Script(status=500)] * 3, "model_error", 3),
    "http_401": ([Script(status=401)], "model_error", 1),
    "garbage": ([Script(garbage=True)] * 3, "model_error", 3),
    "stall_before_first_token": ([Script(stall_before_first=True)] * 3, "model_timeout", 3),
    "stall_after_first_token": ([Script(text="a b c d", stall_after=2, delay=0.01)], "model_timeout", 1),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_failures_end_the_run_failed(case, setup, fake, runner, settings, api):
    scripts, code, requests = CASES[case]
    settings.ASSISTANT_FIRST_TOKEN_TIMEOUT = 0.4
    settings.ASSISTANT_IDLE_TIMEOUT = 0.4
    if scripts is None:
        from tests.support.ports import free_port

        conv = await setup(base_url=f"http://127.0.0.1:{free_port()}/v1")
    else:
        fake.queue(*scripts)
        conv = await setup()
    alice = await connect("alice")
    await subscribe(alice, conv.id)
    await send(alice, conv.id, "hi")
    seen = await events_until(alice, lambda d: d["event"] == "assistant.state" and d["state"] == "error", timeout=15)
    error = seen[-1]
    assert error["code"] == code and error["detail"]
    if case.startswith("stall"):  # the detail says which wait ran out
        assert ("first token" in error["detail"]) == (case == "stall_before_first_token"), error["detail"]
    run = (await wait_run(conv.id, lambda rs: rs[0].state == "failed"))[0]
    assert run.error_code == code and run.ended_at
    assert len(fake.requests) == requests  # retries (2) only before the first token
    body = await database_sync_to_async(lambda: api("alice").get(f"/api/aiim/runs/{run.id}"))()
    assert body.status_code == 200 and body.json()["error"]["code"] == code
    if case == "stall_after_first_token":
        message = await Message.objects.aget(type="ai")
        assert (message.content, message.stream_state) == ("a b ", "failed")
        assert run.reply_message_id == message.id
    else:
        assert not await Message.objects.filter(type="ai").aexists()
    # the conversation keeps working: the next message is stored, and (model up) gets a reply
    if scripts is None:
        await send(alice, conv.id, "again")
        await wait_run(conv.id, lambda rs: len(rs) == 2 and rs[1].state == "failed")
        assert await Message.objects.filter(content="again").aexists()
        await alice.disconnect()
        return
    await send(alice, conv.id, "again")
    done = await events_until(alice, lambda d: ended(d) and d["message"]["stream"]["state"] == "completed", timeout=15)
    assert done[-1]["message"]["content"] == "You said: again"
    await alice.disconnect()


async def test_concurrency_limit_and_one_run_per_conversation(setup, fake, runner, make_conversation):
    conv = await setup(max_concurrent_runs=1)
    other = await database_sync_to_async(make_conversation)("carol", ["bot"], type="direct")
    fake.default = Script(text="a b c d e", delay=0.05)
    alice, carol = await connect("alice"), await connect("carol")
    await send(alice, conv.id, "one")
    await send(alice, conv.id, "two")
    await send(carol, other.id, "three")
    peak = 0
    deadline = time.monotonic() + 20
    while True:
        runs = [r async for r in Run.objects.all()]
        peak = max(peak, sum(r.state == RunState.RUNNING for r in runs))
        if len(runs) == 3 and all(r.state == RunState.COMPLETED for r in runs):
            break
        assert time.monotonic() < deadline, [(r.state, r.error_code) for r in runs]
        await asyncio.sleep(0.01)
    assert peak == 1
    ordered = sorted(runs, key=lambda r: r.started_at)
    for before, after in zip(ordered, ordered[1:]):
        assert after.started_at >= before.ended_at
    await alice.disconnect()
    await carol.disconnect()


async def test_daily_budget(setup, fake, runner, settings):
    settings.ASSISTANT_DAILY_TOKENS = 5
    conv = await setup()
    alice = await connect("alice")
    await send(alice, conv.id, "one two three four five six")
    first = (await wait_run(conv.id, lambda rs: rs[0].state == "completed"))[0]
    assert first.total_tokens >= 5
    await send(alice, conv.id, "again")
    runs = await wait_run(conv.id, lambda rs: len(rs) == 2 and rs[1].state == "failed")
    assert runs[1].error_code == "budget_exhausted"
    assert len(fake.requests) == 1
    await alice.disconnect()


async def test_usage_is_estimated_without_a_usage_chunk(setup, fake, runner):
    conv = await setup()
    fake.queue(Script(text="abcd efgh", usage=False))
    alice = await connect("alice")
    await send(alice, conv.id, "12345678")
    run = (await wait_run(conv.id, lambda rs: rs[0].state == "completed"))[0]
    assert run.usage_estimated and run.completion_tokens == 3 and run.prompt_tokens == 2
    await alice.disconnect()


async def test_stop_run_frame_tenancy(make_conversation):
    """Another tenant's run id answers exactly like a missing one."""
    from aiim_project.core.errors import NotFound
    from assistants import frames
    from tests.support.communicator import FakeConnection

    mine = await database_sync_to_async(make_conversation)("alice", ["bot"], type="direct")
    theirs = await database_sync_to_async(make_conversation)("alice", ["bot"], type="direct", tenant="other")
    run = await Run.objects.acreate(tenant="other", assistant_id="bot", conversation_id=theirs.id)
    alice = FakeConnection(user_id="alice")
    errors = []
    for frame in (
        {"conversation_id": theirs.id, "run_id": run.id},
        {"conversation_id": mine.id, "run_id": run.id},
        {"conversation_id": mine.id, "run_id": "missing"},
        {"conversation_id": theirs.id},
    ):
        with pytest.raises(NotFound) as caught:
            await frames.stop_run(alice, {"type": "stop_run", **frame})
        errors.append((caught.value.code, caught.value.status))
    assert set(errors) == {("not_found", 404)}
    assert (await Run.objects.aget(pk=run.id)).state == RunState.QUEUED
    ack = await frames.stop_run(alice, {"type": "stop_run", "conversation_id": mine.id})
    assert ack == {"type": "ack", "event": "run.stopped", "conversation_id": mine.id, "run_ids": []}
