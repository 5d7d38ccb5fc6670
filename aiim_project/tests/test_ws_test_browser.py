"""/ws-test in a real headless Chromium against a real Daphne process: connect with a token,
subscribe, send a message and a stream chunk, and see the frames in the page's log.

Chromium is driven over the DevTools protocol with the `websockets` client the suite already
uses (no WebDriver). Without a `chromium` binary the test skips, except under CI, where
.ci/run installs it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from aiim_project.core.auth import mint_token

pytestmark = pytest.mark.e2e

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Page:
    """Just enough of the DevTools protocol: evaluate JavaScript in one tab."""

    def __init__(self, ws):
        self._ws = ws
        self._ids = itertools.count(1)

    async def call(self, method: str, **params):
        call_id = next(self._ids)
        await self._ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            reply = json.loads(await asyncio.wait_for(self._ws.recv(), 20))
            if reply.get("id") == call_id:
                assert "error" not in reply, reply
                return reply["result"]

    async def js(self, expression: str):
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 15.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = await self.js(expression)
            if value:
                return value
            await asyncio.sleep(0.1)
        log = await self.js("document.getElementById('log') && document.getElementById('log').innerText")
        raise AssertionError(f"timed out waiting for {expression!r}; page log:\n{log}")


def _devtools_port(profile: Path, proc: subprocess.Popen) -> int:
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if port_file.exists() and port_file.read_text().strip():
            return int(port_file.read_text().split()[0])
        if proc.poll() is not None:
            raise RuntimeError("chromium exited early")
        time.sleep(0.1)
    raise RuntimeError("chromium did not open its DevTools port")


@pytest.fixture
def chromium(tmp_path):
    if CHROMIUM is None:
        if CI:
            pytest.fail("chromium is not installed (.ci/run installs it)")
        pytest.skip("chromium is not installed")
    profile = tmp_path / "profile"
    proc = subprocess.Popen(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port = _devtools_port(profile, proc)
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
        yield next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_ws_test_page_drives_a_real_connection(chromium, daphne, make_conversation):
    server = daphne(1)[0]
    conversation = make_conversation("alice", ("bob",))
    token = mint_token(user_id="alice")

    async def scenario():
        async with connect(chromium, max_size=None) as devtools:
            page = Page(devtools)
            await page.call("Page.navigate", url=f"{server.url}/ws-test")
            await page.wait_for("document.readyState === 'complete' && !!document.getElementById('connect')")
            await page.js(f"document.getElementById('token').value = {json.dumps(token)}")
            await page.js("document.getElementById('connect').click()")
            await page.wait_for("document.getElementById('status').textContent === 'connected'")
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
