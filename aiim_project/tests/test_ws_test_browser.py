"""/ws-test in a real headless Chromium against a real Daphne process: connect with a token,
subscribe, send a message and a stream chunk, and see the frames in the page's log.

Chromium is driven over the DevTools protocol with the `websockets` client the suite already
uses (no WebDriver). Without a `chromium` binary the test skips, except under CI, where
.ci/run installs it.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.asyncio.client import connect

from aiim_project.core.auth import mint_token
from tests.support.devtools import Page, open_ws_test

pytestmark = pytest.mark.e2e

def test_ws_test_page_drives_a_real_connection(devtools_page_url, daphne, make_conversation):
    server = daphne(1)[0]
    conversation = make_conversation("alice", ("bob",))
    token = mint_token(user_id="alice")

    async def scenario():
        async with connect(devtools_page_url, max_size=None) as devtools:
            page = Page(devtools)
            await open_ws_test(page, server.url, token)
            await page.js(f"document.getElementById('conversation').value = {json.dumps(conversation.id)}")
            await page.js("document.getElementById('subscribe').click()")
            await page.wait_for("document.getElementById('log').innerText.includes('\"subscribed\"')")
            await page.js("document.getElementById('content').value = 'hello from chromium'")
            await page.js("document.getElementById('send').click()")
            await page.wait_for("document.getElementById('log').innerText.includes('message.sent')")
            await page.wait_for("document.getElementById('log').innerText.includes('message.created')")
            await page.js("document.getElementById('stream').click()")
            await page.wait_for("document.getElementById('log').innerText.includes('stream.sent')")
            return await page.js("document.getElementById('log').innerText")

    log = asyncio.run(scenario())
    assert "hello from chromium" in log
    assert '"type":"error"' not in log.replace(" ", "")
