"""The message stream endpoint read by the real AI SDK (`ai`, pinned in tests/node) in Node:
its parser accepts every part, and `readUIMessageStream` yields one assistant UIMessage
whose text is the stored message's content and whose id is the AIIM message id. Without
Node or the installed package the test skips, except under CI (.ci/run runs `npm ci`)."""

from __future__ import annotations

import json
import subprocess

import pytest

from messaging.models import Message
from tests.support.node import NODE_DIR
from tests.support.sse import post_chunk

pytestmark = pytest.mark.e2e




def read(node: str, url: str, token: str) -> subprocess.Popen:
    return subprocess.Popen([node, "read_ui_stream.mjs", url, token], cwd=NODE_DIR, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def result_of(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def text(message: dict) -> str:
    return "".join(p["text"] for p in message["parts"] if p["type"] == "text")


def test_ai_sdk_reads_a_live_stream_into_one_ui_message(daphne, make_conversation, token, node):
    server = daphne(1)[0]
    conversation = make_conversation("alice", ("bob",))
    alice = token("alice")
    first = post_chunk(server, alice, conversation.id, "s1", "The stored part. ", index=0)
    url = f"{server.url}/api/aiim/messages/{conversation.id}/{first['message_id']}/stream"
    proc = read(node, url, token("bob"))
    assert proc.stdout.readline().strip() == "connected"
    for i, piece in enumerate(["Then ", "live ", "chunks."], start=1):
        post_chunk(server, alice, conversation.id, "s1", piece, index=i, end=i == 3)
    result = result_of(proc)
    stored = Message.objects.get(pk=first["message_id"])
    assert result["status"] == 200 and result["header"] == "v1"
    assert result["message"]["id"] == stored.id
    assert result["message"]["role"] == "assistant"
    assert text(result["message"]) == stored.content == "The stored part. Then live chunks."
    assert result["message"]["metadata"]["seq"] == stored.seq
    assert result["chunks"][0] == "start" and result["chunks"][-1] == "finish"
    assert result["errors"] == []


def test_ai_sdk_reads_ended_and_failed_streams(daphne, make_conversation, token, node):
    server = daphne(1)[0]
    conversation = make_conversation("alice", ("bob",))
    alice = token("alice")
    done = post_chunk(server, alice, conversation.id, "done", "all of it", index=0, end=True)
    failed = post_chunk(server, alice, conversation.id, "failed", "half", index=0)
    Message.objects.filter(pk=failed["message_id"]).update(stream_state="failed")
    stopped = post_chunk(server, alice, conversation.id, "stopped", "cut", index=0)
    Message.objects.filter(pk=stopped["message_id"]).update(stream_state="stopped")
    # The reasoning an assistant run keeps in the reply's metadata, and the run extras.
    reasoned = post_chunk(server, alice, conversation.id, "reasoned", "answer", index=0, end=True)
    Message.objects.filter(pk=reasoned["message_id"]).update(
        metadata={"reasoning": "first, think", "run_id": "run-1", "usage": {"output_tokens": 3}})
    base = f"{server.url}/api/aiim/messages/{conversation.id}"
    results = {name: result_of(read(node, f"{base}/{m['message_id']}/stream", token("bob")))
               for name, m in (("done", done), ("failed", failed), ("stopped", stopped), ("reasoned", reasoned))}
    assert text(results["done"]["message"]) == "all of it" and results["done"]["errors"] == []
    assert results["done"]["message"]["id"] == done["message_id"]
    assert text(results["failed"]["message"]) == "half"
    assert results["failed"]["errors"] == ["The reply failed."]
    assert text(results["stopped"]["message"]) == "cut"
    assert results["stopped"]["chunks"][-2:] == ["abort", "finish"] and results["stopped"]["errors"] == []
    message = results["reasoned"]["message"]
    assert [p["type"] for p in message["parts"]] == ["step-start", "reasoning", "text"]
    assert message["parts"][1]["text"] == "first, think" and message["parts"][2]["text"] == "answer"
    assert message["metadata"]["run_id"] == "run-1" and message["metadata"]["usage"] == {"output_tokens": 3}
