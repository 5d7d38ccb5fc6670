"""/chat-demo in headless Chromium against a live Daphne whose inline runner answers from the
loopback fake model: load the conversations, send, watch the reply stream in, Stop."""

from __future__ import annotations

import json

import pytest

from aiim_project.core.auth import mint_token
from assistants import services as assistant_services
from assistants.fake_model import Script
from messaging.models import Message
from tests.support.http import fetch as http

pytestmark = pytest.mark.e2e

BUBBLE = "document.querySelector('.msg.assistant:last-child')"



def test_send_watch_the_reply_stream_and_stop(daphne, fake, make_conversation, tab):
    server = daphne(1, ASSISTANT_RUNNER="inline", ASSISTANT_POLL_INTERVAL="0.05")[0]
    assert http("GET", server.url + "/health/live")[0] == 200  # starts the runner
    assistant_services.assistant_create(
        tenant="default", is_admin=True, assistant_id="bot",
        data=assistant_services.AssistantInput(name="Bot", base_url=fake.base_url, model="fake-1"),
    )
    conversation = make_conversation("alice", ("bot",), type="direct")

    tab.goto(server.url + "/chat-demo")
    tab.js(f"document.getElementById('token').value = {json.dumps(mint_token(user_id='alice'))}")
    tab.js("document.getElementById('load').click()")
    tab.wait_for(f"document.getElementById('conversation').value === {json.dumps(conversation.id)}")

    words = " ".join(f"w{k}" for k in range(30))
    fake.queue(Script(text=words, delay=0.04))
    tab.js("document.getElementById('input').value = 'hello'; document.getElementById('send').click()")
    # Seen while streaming: part of the text, the cursor class, Stop enabled.
    partial = tab.wait_for(f"{BUBBLE} && {BUBBLE}.classList.contains('streaming') && {BUBBLE}.textContent.length > 0 && {BUBBLE}.textContent")
    assert words.startswith(partial) and partial != words
    assert tab.js("document.getElementById('stop').disabled") is False
    tab.wait_for(f"{BUBBLE}.dataset.state === 'finished'")
    reply = Message.objects.get(type="ai")
    assert tab.js(f"{BUBBLE}.textContent") == reply.content == words
    assert tab.js(f"{BUBBLE}.dataset.messageId") == reply.id
    assert tab.style(".msg.user", "backgroundColor") == "rgb(47, 111, 235)"
    assert tab.js("document.querySelector('.msg.user').textContent") == "hello"
    assert tab.js("document.getElementById('stop').disabled") is True

    fake.queue(Script(text=" ".join(f"s{k}" for k in range(300)), delay=0.03))
    tab.js("document.getElementById('input').value = 'again'; document.getElementById('send').click()")
    tab.wait_for(f"{BUBBLE}.classList.contains('streaming') && {BUBBLE}.textContent.length > 0")
    tab.js("document.getElementById('stop').click()")
    tab.wait_for(f"{BUBBLE}.dataset.state === 'stopped'")
    stopped = Message.objects.filter(type="ai").order_by("-seq").first()
    assert stopped.stream_state == "stopped" and len(stopped.content.split()) < 300
    assert tab.js(f"{BUBBLE}.textContent") == stopped.content
    assert tab.style(".msg.assistant.stopped", "borderLeftColor") == "rgb(201, 60, 55)"
    tab.assert_nothing_left_the_machine()
