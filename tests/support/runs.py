"""Following an assistant's runs from a test: frames over the in-process WebSocket client and
run rows from the database."""

from __future__ import annotations

import asyncio
import time

from assistants.models import Run


async def send(comm, conv_id, content, **kw):
    await comm.send_json_to({"type": "send_msg", "conversation_id": conv_id, "content": content, **kw})


async def events_until(comm, done, timeout=10.0):
    seen = []
    deadline = time.monotonic() + timeout
    while True:
        frame = await comm.receive_json_from(timeout=max(0.1, deadline - time.monotonic()))
        if frame.get("type") == "event":
            seen.append(frame["data"])
            if done(frame["data"]):
                return seen


def reply_text(seen) -> str:
    """The assistant's reply as a client rebuilds it from the events: the `message.created`
    text, then the chunks after the chunk count it carried, each exactly once, in order.
    (A subscription whose tail read found the reply already started gets it that way: the
    row's text so far in `message.created`, the live chunks after it.)"""
    created = next(e["message"] for e in seen if e["event"] == "message.created" and e["message"]["type"] == "ai")
    text, expected = created["content"] or "", created["stream"]["chunk_count"]
    for e in seen:
        if e["event"] == "message.stream_chunk" and e["message_id"] == created["message_id"]:
            assert e["chunk_index"] == expected, (e["chunk_index"], expected)
            text, expected = text + e["delta"], e["last_chunk_index"] + 1
    return text


def ended(data):
    return data["event"] == "message.updated" and data["message"]["stream"] and data["message"]["stream"]["state"] != "streaming"


def states(seen):
    return [e["state"] for e in seen if e["event"] == "assistant.state"]


async def run_of(conv_id) -> Run:
    return await Run.objects.aget(conversation_id=conv_id)


async def wait_run(conv_id, predicate, timeout=10.0) -> Run:
    deadline = time.monotonic() + timeout
    while True:
        runs = [r async for r in Run.objects.filter(conversation_id=conv_id).order_by("created_at")]
        if runs and predicate(runs):
            return runs
        assert time.monotonic() < deadline, [(r.state, r.error_code) for r in runs]
        await asyncio.sleep(0.05)


async def drain(comm, wait=0.3):
    """Event data that arrives within `wait` seconds of quiet (receive_nothing does not
    cancel the application on timeout, as receive_json_from does)."""
    frames = []
    while not await comm.receive_nothing(timeout=wait):
        frames.append(await comm.receive_json_from())
    return [f["data"] for f in frames if f.get("type") == "event"]
