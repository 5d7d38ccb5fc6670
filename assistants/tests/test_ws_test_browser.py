"""/ws-test in headless Chromium against a real Daphne process with its inline runner and the
fake model: the page shows the assistant's state, streams the reply, and its Stop button stops it."""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.asyncio.client import connect

from aiim_project.core.auth import mint_token
from assistants.fake_model import Script
from assistants.models import Run
from tests.support.devtools import Page, open_ws_test

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_ws_test_page_shows_assistant_state_and_stops_a_run(devtools_page_url, daphne, fake, make_conversation, make_assistant):
    fake.default = Script(text=" ".join(f"w{k}" for k in range(200)), delay=0.1)
    server = daphne(1, ASSISTANT_RUNNER="inline", ASSISTANT_POLL_INTERVAL="0.05")[0]
    make_assistant(base_url=fake.base_url)
    conversation = make_conversation("alice", ("bot",), type="direct")
    token = mint_token(user_id="alice")

    async def scenario():
        async with connect(devtools_page_url, max_size=None) as devtools:
            page = Page(devtools)
            await open_ws_test(page, server.url, token, ready="stop-run")
            assert await page.js("document.getElementById('stop-run').disabled") is True
            await page.js(f"document.getElementById('conversation').value = {json.dumps(conversation.id)}")
            await page.js("document.getElementById('subscribe').click()")
            await page.wait_for("document.getElementById('log').innerText.includes('\"subscribed\"')")
            await page.js("document.getElementById('content').value = 'hi bot'")
            await page.js("document.getElementById('send').click()")
            await page.wait_for("document.getElementById('assistant-state').dataset.state === 'generating'")
            shown = await page.js("document.getElementById('assistant-state').textContent")
            colour = await page.js("getComputedStyle(document.getElementById('assistant-state')).backgroundColor")
            await page.wait_for("document.getElementById('assistant-reply').textContent.startsWith('w0 w1')")
            assert await page.js("document.getElementById('stop-run').disabled") is False
            await page.js("document.getElementById('stop-run').click()")
            await page.wait_for("document.getElementById('assistant-state').dataset.state === 'idle'")
            await page.wait_for("document.getElementById('assistant-reply').textContent.endsWith('[stopped]')")
            return shown, colour, await page.js("document.getElementById('stop-run').disabled")

    shown, colour, disabled_after = asyncio.run(scenario())
    assert shown == "bot: generating"
    assert colour == "rgb(201, 242, 208)"  # the generating colour
    assert disabled_after is True
    assert Run.objects.get().state == "stopped"
    assert fake.disconnects
