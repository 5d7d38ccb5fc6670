"""/ws-test answers the server's pings itself, so a tab left open stays connected past
WS_IDLE_TIMEOUT (the original AIIM's page does not: it has a PONG button; docs/migrating.md).
Headless Chromium against a real Daphne with the intervals shortened."""

from __future__ import annotations

import asyncio

import pytest
from websockets.asyncio.client import connect

from aiim_project.core.auth import mint_token
from tests.support.devtools import Page, open_ws_test

pytestmark = pytest.mark.e2e

PING_INTERVAL, IDLE_TIMEOUT = 0.5, 2.0


def test_an_idle_tab_answers_pings_and_stays_connected(devtools_page_url, daphne):
    server = daphne(1, WS_PING_INTERVAL=str(PING_INTERVAL), WS_IDLE_TIMEOUT=str(IDLE_TIMEOUT))[0]
    log_text = "document.getElementById('log').innerText"

    async def scenario():
        async with connect(devtools_page_url, max_size=None) as devtools:
            page = Page(devtools)
            await open_ws_test(page, server.url, mint_token(user_id='alice'))
            # Nobody touches the tab for twice the idle timeout.
            await asyncio.sleep(2 * IDLE_TIMEOUT)
            return await page.js("document.getElementById('status').textContent"), await page.js(log_text)

    status, log = asyncio.run(scenario())
    assert status == "connected", log
    assert "closed 4408" not in log
    pings = [line for line in log.splitlines() if "<<" in line and '{"type":"ping"}' in line]
    pongs = [line for line in log.splitlines() if ">>" in line and '"type":"pong"' in line]
    assert len(pings) >= 3 and len(pongs) == len(pings), log
