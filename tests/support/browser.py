"""Pages as a person sees them: headless Chromium driven over the DevTools protocol (the
`websockets` client the suite already has; no WebDriver), against real Daphne processes.

Chromium resolves no host but 127.0.0.1 (`--host-resolver-rules`), and every tab records the
URLs it requested so a test can assert that nothing left the machine. One Chromium and one
server per test module; each test gets a fresh tab in its own browser context (no cookies
shared between tests). A failing test leaves a screenshot of its tab in TEST_OUTPUT_DIR
(default test-output/browser/).

The root conftest.py registers this module as a plugin, so every test may use its fixtures.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from websockets.sync.client import connect

from . import ROOT
from .daphne import DaphneProcess, daphne_env
from .ports import free_port

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
OUTPUT_DIR = Path(os.environ.get("TEST_OUTPUT_DIR", ROOT / "test-output")) / "browser"
# What a page may load: this machine only (and inline data).
LOCAL_URL = re.compile(r"^(https?|wss?)://127\.0\.0\.1(:\d+)?/|^(data|blob|about):")


class Tab:
    def __init__(self, browser: Chromium, context_id: str, target_id: str):
        self.browser = browser
        self.context_id = context_id
        self.target_id = target_id
        self._stack = contextlib.ExitStack()
        self._ws = self._stack.enter_context(
            connect(f"ws://127.0.0.1:{browser.port}/devtools/page/{target_id}", max_size=None)
        )
        self._ids = itertools.count(1)
        self.events: list[dict] = []
        self.call("Page.enable")
        self.call("Network.enable")
        self.call("Runtime.enable")

    # --- protocol -----------------------------------------------------------------------
    def _recv(self, timeout: float) -> dict:
        message = json.loads(self._ws.recv(timeout=timeout))
        if "id" not in message:
            self.events.append(message)
        return message

    def call(self, method: str, timeout: float = 20.0, **params):
        call_id = next(self._ids)
        self._ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            reply = self._recv(max(0.01, deadline - time.monotonic()))
            if reply.get("id") == call_id:
                assert "error" not in reply, reply
                return reply["result"]

    def js(self, expression: str):
        """The value of a JavaScript expression (a promise is awaited)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 15.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                value = self.js(expression)
            except AssertionError:  # the page is between two documents
                value = None
            if value:
                return value
            time.sleep(0.05)
        text = self.js("document.body ? document.body.innerText.slice(0, 2000) : ''")
        raise AssertionError(f"timed out waiting for {expression!r} on {self.url}; page text:\n{text}")

    # --- navigation ---------------------------------------------------------------------
    def _loads(self) -> int:
        return sum(1 for e in self.events if e.get("method") == "Page.loadEventFired")

    def _wait_load(self, before: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while self._loads() <= before:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no page load within {timeout} s (at {self.url})")
            try:
                self._recv(remaining)
            except TimeoutError:
                pass

    def goto(self, url: str) -> None:
        before = self._loads()
        self.call("Page.navigate", url=url)
        self._wait_load(before)

    def click_and_wait(self, selector: str) -> None:
        """Click what submits a form or follows a link, and wait for the next page."""
        before = self._loads()
        self.js(f"document.querySelector({json.dumps(selector)}).click()")
        self._wait_load(before)

    @property
    def url(self) -> str:
        try:
            return self.js("location.href")
        except Exception:
            return "?"

    def style(self, selector: str, prop: str) -> str:
        return self.js(f"getComputedStyle(document.querySelector({json.dumps(selector)})).{prop}")

    def requested_urls(self) -> list[str]:
        self.js("1")  # drain pending events
        return [e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"]

    def assert_nothing_left_the_machine(self) -> None:
        """Every request went to this machine, or the page's CSP stopped it before it was sent."""
        self.js("1")
        urls = {
            e["params"]["requestId"]: e["params"]["request"]["url"]
            for e in self.events
            if e.get("method") == "Network.requestWillBeSent"
        }
        blocked = {
            e["params"]["requestId"]
            for e in self.events
            if e.get("method") == "Network.loadingFailed" and e["params"].get("blockedReason") == "csp"
        }
        assert urls, "no request recorded"
        assert [u for rid, u in urls.items() if not LOCAL_URL.match(u) and rid not in blocked] == []

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self._stack.close()
        finally:
            self.browser.close_tab(self)


class Chromium:
    def __init__(self, profile: Path):
        if CHROMIUM is None:
            if CI:
                pytest.fail("chromium is not installed (.ci/run installs it)")
            pytest.skip("chromium is not installed")
        self.proc = subprocess.Popen(
            [
                CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-extensions",
                # Nothing but this machine resolves: a page that needs the internet fails here.
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                "--window-size=1280,900", "--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.port = self._devtools_port(profile)
        version = json.load(urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/version", timeout=10))
        self._stack = contextlib.ExitStack()
        self._browser = self._stack.enter_context(connect(version["webSocketDebuggerUrl"], max_size=None))
        self._ids = itertools.count(1)

    def _devtools_port(self, profile: Path) -> int:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if port_file.exists() and port_file.read_text().strip():
                return int(port_file.read_text().split()[0])
            if self.proc.poll() is not None:
                raise RuntimeError("chromium exited early")
            time.sleep(0.05)
        raise RuntimeError("chromium did not open its DevTools port")

    def _call(self, method: str, **params):
        call_id = next(self._ids)
        self._browser.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self._browser.recv(timeout=20))
            if reply.get("id") == call_id:
                assert "error" not in reply, reply
                return reply["result"]

    def new_tab(self) -> Tab:
        context_id = self._call("Target.createBrowserContext", disposeOnDetach=True)["browserContextId"]
        target_id = self._call("Target.createTarget", url="about:blank", browserContextId=context_id)["targetId"]
        return Tab(self, context_id, target_id)

    def close_tab(self, tab: Tab) -> None:
        self._call("Target.closeTarget", targetId=tab.target_id)
        self._call("Target.disposeBrowserContext", browserContextId=tab.context_id)

    def stop(self) -> None:
        try:
            self._stack.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


# --- servers ---------------------------------------------------------------------------


def start_server(env: dict[str, str], log: Path) -> DaphneProcess:
    """One Daphne process (the same command as .ci/start and the Docker image), answering."""
    server = DaphneProcess(free_port(), env, log)
    server.wait_ready()
    return server


PROD_ENV = {
    "DEBUG": "false",
    "SECRET_KEY": "browser-test-secret-key-0123456789-0123456789",
    "JWT_SECRET": "",  # filled from the test settings, so tokens minted in tests verify
    "ALLOWED_HOSTS": "127.0.0.1",
}


def collectstatic(static_root: Path, env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
        cwd=ROOT, env={**env, "STATIC_ROOT": str(static_root)}, check=True, timeout=300,
    )


# --- fixtures --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium(tmp_path_factory):
    browser = Chromium(tmp_path_factory.mktemp("chromium-profile"))
    yield browser
    browser.stop()


@pytest.fixture(scope="module")
def dev_server(django_db_setup, django_db_blocker, tmp_path_factory):
    """As `bash .ci/start` runs it: DEBUG on, static files straight from the apps."""
    with django_db_blocker.unblock():
        server = start_server(daphne_env(), tmp_path_factory.mktemp("dev-server") / "daphne.log")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def prod_server(django_db_setup, django_db_blocker, tmp_path_factory):
    """As the Docker image runs it: DEBUG off, after collectstatic."""
    from django.conf import settings

    root = tmp_path_factory.mktemp("prod-server")
    with django_db_blocker.unblock():
        env = daphne_env(**{**PROD_ENV, "JWT_SECRET": settings.JWT_SECRET, "STATIC_ROOT": str(root / "static")})
    collectstatic(root / "static", env)
    server = start_server(env, root / "daphne.log")
    server.static_root = root / "static"
    yield server
    server.stop()


@pytest.fixture
def tab(chromium, request):
    """A fresh tab (own cookies); its screenshot lands in OUTPUT_DIR if the test fails."""
    failed_before = request.session.testsfailed
    page = chromium.new_tab()
    yield page
    try:
        if request.session.testsfailed > failed_before:
            OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
            path = OUTPUT_DIR / (re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid) + ".png")
            page.screenshot(path)
            print(f"screenshot: {path}")
    finally:
        page.close()
