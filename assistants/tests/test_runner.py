"""The runner end to end in one process: a real loopback model server (assistants.fake_model),
the real gateway over the in-process WebSocket client, the real channel layer and database."""

from __future__ import annotations

import asyncio
import time

import pytest
from channels.db import database_sync_to_async

from assistants.fake_model import Script
from assistants.models import Run, RunState
from messaging.models import Message
from tests.support.communicator import connect, subscribe
from tests.support.runs import drain, ended, events_until, reply_text, run_of, send, states, wait_run

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def setup(make_assistant, make_conversation, fake):
    def make(type="direct", others=("bot",), **assistant):
        make_assistant(base_url=fake.base_url, **assistant)
        return make_conversation("alice", list(others), type=type)

    return database_sync_to_async(make)














async def test_direct_message_streams_a_reply(setup, fake, runner):
    conv = await setup(system_prompt="Be brief.")
    alice = await connect("alice")
    await subscribe(alice, conv.id)
    await send(alice, conv.id, "hello bot")
    seen = await events_until(alice, ended)
    seen += await drain(alice)  # the idle state event follows the commit
    assert states(seen) == ["queued", "thinking", "generating", "idle"]
    created = [e for e in seen if e["event"] == "message.created" and e["message"]["type"] == "ai"]
    assert len(created) == 1 and created[0]["message"]["sender_id"] == "bot"
    final = seen[-1] if ended(seen[-1]) else next(e for e in seen if ended(e))
    assert final["message"]["content"] == "You said: hello bot"
    assert final["message"]["stream"]["state"] == "completed"
    run = await run_of(conv.id)
    assert final["message"]["client_msg_id"] == f"run:{run.id}" and final["message"]["metadata"] == {"run_id": run.id}
    assert created[0]["message"]["metadata"] == {"run_id": run.id}
    assert run.state == RunState.COMPLETED and run.reply_message_id == final["message"]["message_id"]
    assert (run.completion_tokens, run.usage_estimated) == (4, False) and run.total_tokens > 3
    assert run.first_token_at and run.started_at and run.ended_at
    body = fake.requests[-1].body
    assert body["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "name": "alice", "content": "hello bot"}]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True} and body["model"] == "fake-1"
    # the events rebuild the same text
    assert reply_text(seen) == "You said: hello bot"
    await alice.disconnect()




async def test_history_roles_and_next_turn(setup, fake, runner):
    conv = await setup()
    alice = await connect("alice")
    await subscribe(alice, conv.id)
    await send(alice, conv.id, "one")
    await events_until(alice, ended)
    await send(alice, conv.id, "two")
    await events_until(alice, lambda d: ended(d) and d["message"]["content"] == "You said: two")
    assert fake.requests[-1].body["messages"] == [
        {"role": "user", "name": "alice", "content": "one"},
        {"role": "assistant", "content": "You said: one"},
        {"role": "user", "name": "alice", "content": "two"},
    ]
    await alice.disconnect()


async def test_group_mentions_only_and_assistant_never_triggers(setup, fake, runner, make_assistant):
    conv = await setup(type="group", others=("bob", "bot"))
    alice = await connect("alice")
    await subscribe(alice, conv.id)
    await send(alice, conv.id, "no mention here, @bot2 neither")
    await send(alice, conv.id, "via metadata", metadata={"mentions": ["bot"]})
    await send(alice, conv.id, "hey @bot what's up")
    await wait_run(conv.id, lambda rs: len(rs) == 2 and all(r.state == "completed" for r in rs))
    await asyncio.sleep(0.3)
    assert await Run.objects.filter(conversation_id=conv.id).acount() == 2
    # the assistant's own (stream) replies and an assistant sending a plain message trigger nothing
    bot = await connect("bot")
    await send(bot, conv.id, "@bot talking to myself")
    await bot.receive_json_from(timeout=5)
    await asyncio.sleep(0.3)
    assert await Run.objects.filter(conversation_id=conv.id).acount() == 2
    await alice.disconnect()
    await bot.disconnect()


async def test_reply_in_always(setup, fake, runner):
    conv = await setup(type="group", others=("bob", "bot"), reply_in="always")
    alice = await connect("alice")
    await send(alice, conv.id, "anyone?")
    runs = await wait_run(conv.id, lambda rs: rs[0].state == "completed")
    assert len(runs) == 1
    await alice.disconnect()


async def test_reasoning_keeps_thinking(setup, fake, runner):
    conv = await setup()
    fake.queue(Script(reasoning=["let me", " think"], text="done", delay=0.05))
    alice = await connect("alice")
    await subscribe(alice, conv.id)
    await send(alice, conv.id, "q")
    seen = await events_until(alice, ended)
    seen += await drain(alice)
    assert states(seen) == ["queued", "thinking", "generating", "idle"]
    thinking_at = seen.index(next(e for e in seen if e.get("state") == "thinking"))
    generating_at = seen.index(next(e for e in seen if e.get("state") == "generating"))
    assert generating_at > thinking_at
    # The reasoning is kept with the reply (the UI message stream sends it before the text).
    reply = await Message.objects.aget(conversation_id=conv.id, sender_id="bot")
    assert reply.metadata["reasoning"] == "let me think" and reply.content == "done"
    await alice.disconnect()


async def test_chunks_are_coalesced(setup, fake, runner, settings):
    settings.ASSISTANT_CHUNK_MS = 200
    conv = await setup()
    text = " ".join(f"w{k}" for k in range(40))
    fake.queue(Script(text=text, delay=0.01))  # ~0.4 s of words
    alice = await connect("alice")
    await subscribe(alice, conv.id)
    started = time.monotonic()
    await send(alice, conv.id, "q")
    seen = await events_until(alice, ended)
    elapsed = time.monotonic() - started
    chunks = [e for e in seen if e["event"] == "message.stream_chunk"]
    assert reply_text(seen) == text
    # The first token at once, then at most one chunk per 200 ms window (a loaded machine
    # stretches the stream, not the window), and far fewer chunks than the 40 words.
    windows = 2 + int(elapsed / 0.2)
    assert len(chunks) <= min(windows, 20), (len(chunks), elapsed)
    message = await Message.objects.aget(type="ai")
    assert message.stream_chunk_count == len(chunks) or message.stream_chunk_count <= min(windows, 20)
    await alice.disconnect()


async def test_api_key_reaches_the_model_but_no_log_line(setup, fake, runner, caplog):
    import logging

    secret = "sk-runner-secret-0123456789"
    for name in ("", "openai", "httpx2", "httpcore2", "aiim.assistants"):  # even at DEBUG
        caplog.set_level(logging.DEBUG, logger=name)
    conv = await setup(api_key=secret)
    alice = await connect("alice")
    await subscribe(alice, conv.id)
    await send(alice, conv.id, "hi")
    await events_until(alice, ended)
    assert fake.requests[-1].headers["authorization"] == f"Bearer {secret}"
    assert secret not in caplog.text
    assert secret not in str([r.__dict__ for r in caplog.records])
    await alice.disconnect()
