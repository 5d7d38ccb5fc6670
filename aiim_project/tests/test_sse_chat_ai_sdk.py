"""The chat endpoints read by the real AI SDK (`ai`, tests/node/chat.mjs): useChat's
DefaultChatTransport sends, resumes and is stopped against a live Daphne whose inline
runner answers from the loopback fake model."""

from __future__ import annotations

import json
import subprocess

import pytest

from aiim_project.core.auth import mint_token
from assistants import services as assistant_services
from assistants.fake_model import Script
from assistants.models import Run
from messaging.models import Message
from tests.support.http import fetch as http
from tests.support.node import NODE_DIR

pytestmark = pytest.mark.e2e

RUNNER_ENV = {"ASSISTANT_RUNNER": "inline", "ASSISTANT_POLL_INTERVAL": "0.05"}



@pytest.fixture
def chat_setup(daphne, fake, make_conversation):
    server = daphne(1, **RUNNER_ENV)[0]
    assert http("GET", server.url + "/health/live")[0] == 200  # starts the runner
    assistant_services.assistant_create(
        tenant="default", is_admin=True, assistant_id="bot",
        data=assistant_services.AssistantInput(name="Bot", base_url=fake.base_url, model="fake-1"),
    )
    conversation = make_conversation("alice", ("bot",), type="direct")
    return server, conversation


def chat(node_bin: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([node_bin, "chat.mjs", *args], cwd=NODE_DIR, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def result_of(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def wait_delta(proc: subprocess.Popen) -> None:
    line = proc.stdout.readline().strip()
    assert line == "delta", (line, proc.stderr.read() if not line else "")


def text(message: dict) -> str:
    return "".join(p["text"] for p in message["parts"] if p["type"] == "text")


def test_send_gives_the_stored_reply_and_a_finished_chat_resumes_nothing(chat_setup, node):  # noqa: F811
    server, conversation = chat_setup
    api, alice = f"{server.url}/api/aiim/chat", mint_token(user_id="alice")
    result = result_of(chat(node, "send", api, alice, conversation.id, "ui-1", "hello there"))
    reply = Message.objects.get(type="ai")
    assert result["errors"] == [] and result["message"]["role"] == "assistant"
    assert result["message"]["id"] == reply.id
    assert text(result["message"]) == reply.content == "You said: hello there"
    assert result["chunks"][0] == "start" and result["chunks"][-1] == "finish"
    assert Run.objects.count() == 1  # the trigger hook's run is the chat's run, not a second one
    assert Message.objects.filter(sender_id="alice", client_msg_id="ui-1").count() == 1
    assert result_of(chat(node, "reconnect", api, alice, conversation.id))["message"] is None  # 204


def test_reconnect_mid_reply_gets_all_of_it_and_stop_ends_it_early(chat_setup, fake, node):  # noqa: F811
    server, conversation = chat_setup
    api, alice = f"{server.url}/api/aiim/chat", mint_token(user_id="alice")
    fake.queue(Script(text=" ".join(f"w{k}" for k in range(40)), delay=0.03))
    sender = chat(node, "send", api, alice, conversation.id, "ui-1", "long one")
    wait_delta(sender)
    resumed = result_of(chat(node, "reconnect", api, alice, conversation.id))
    sent = result_of(sender)
    reply = Message.objects.get(type="ai")
    assert reply.stream_state == "completed"
    assert text(resumed["message"]) == text(sent["message"]) == reply.content == " ".join(f"w{k}" for k in range(40))
    assert resumed["message"]["id"] == reply.id

    fake.queue(Script(text=" ".join(f"s{k}" for k in range(300)), delay=0.03))
    stopped = chat(node, "send", api, alice, conversation.id, "ui-2", "another long one")
    wait_delta(stopped)
    status, _, body = http("POST", f"{api}/{conversation.id}/stop", None, {"Authorization": f"Bearer {alice}"})
    assert status == 200, body
    result = result_of(stopped)
    reply = Message.objects.filter(type="ai").order_by("-seq").first()
    assert reply.stream_state == "stopped"
    assert result["chunks"][-2:] == ["abort", "finish"] and result["errors"] == []
    assert text(result["message"]) == reply.content and len(reply.content.split()) < 300


def test_regenerate_answers_the_last_message_again_and_a_failure_before_the_first_token_is_an_error(chat_setup, fake, node):  # noqa: F811
    server, conversation = chat_setup
    api, alice = f"{server.url}/api/aiim/chat", mint_token(user_id="alice")
    fake.queue(Script(text="first answer", delay=0.005))
    assert text(result_of(chat(node, "send", api, alice, conversation.id, "ui-1", "question"))["message"]) == "first answer"
    again = result_of(chat(node, "regenerate", api, alice, conversation.id))
    replies = list(Message.objects.filter(type="ai").order_by("seq"))
    assert len(replies) == 2 and again["message"]["id"] == replies[1].id
    assert text(again["message"]) == replies[1].content == "You said: question"
    assert Run.objects.filter(trigger_message_id=Message.objects.get(sender_id="alice").id).count() == 2

    fake.queue(Script(status=400))  # not retried: the run fails before any reply message exists
    failed = result_of(chat(node, "send", api, alice, conversation.id, "ui-2", "break please"))
    assert failed["chunks"][0] == "start" and failed["chunks"][-1] == "error"
    assert failed["errors"] == ["The model endpoint answered HTTP 400."]
    assert Message.objects.filter(type="ai").count() == 2
