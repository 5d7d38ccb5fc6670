"""Headless Chromium over the DevTools protocol with the `websockets` client (no WebDriver):
the `devtools_page_url` fixture opens a browser and yields its first tab's DevTools URL;
`Page` evaluates JavaScript in it. Without a `chromium` binary a test skips, except under CI,
where .ci/run installs it. (tests/support/browser.py is the fuller driver with screenshots.)"""

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
def devtools_page_url(tmp_path):
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


async def open_ws_test(page: Page, base_url: str, token: str, *, ready: str = "connect") -> None:
    """Open /ws-test, paste `token`, press Connect and wait until it says connected. `ready`:
    the element id whose presence says the page has loaded."""
    await page.call("Page.navigate", url=f"{base_url}/ws-test")
    await page.wait_for(f"document.readyState === 'complete' && !!document.getElementById('{ready}')")
    await page.js(f"document.getElementById('token').value = {json.dumps(token)}")
    await page.js("document.getElementById('connect').click()")
    await page.wait_for("document.getElementById('status').textContent === 'connected'")
