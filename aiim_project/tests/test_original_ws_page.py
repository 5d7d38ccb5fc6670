"""The original AIIM's browser page (`ws_test.html`, unmodified, read from
../shared/original/) in headless Chromium against a real Daphne: connect, subscribe, send,
a stream chunk and a stream end, unsubscribe (twice), and its PONG button. The page's log
must show what a client of the original expects, `data.message` on a chunk included.

The page connects to `ws://<its own host>:8083`, a fixed port. So the server listens on
port 8083 of a loopback address of its own (127.x.y.z: the whole 127/8 is loopback on
Linux), which no other test or server on the machine uses, and the page is served from
the same address on a free port.
"""

from __future__ import annotations

import asyncio
import functools
import http.server
import json
import random
import socket
import threading

import pytest
from websockets.asyncio.client import connect

from aiim_project.core.auth import mint_token
from aiim_project.tests.original import original_dir
from tests.support.daphne import DaphneProcess, daphne_env
from tests.support.devtools import Page

pytestmark = pytest.mark.e2e

ORIGINAL_WS_PORT = 8083  # hard-coded in the original page


def _free_loopback_host() -> str:
    rng = random.Random()
    for _ in range(50):
        host = f"127.{rng.randint(1, 254)}.{rng.randint(0, 254)}.{rng.randint(1, 254)}"
        with socket.socket() as s:
            try:
                s.bind((host, ORIGINAL_WS_PORT))
            except OSError:
                continue
        return host
    raise RuntimeError("no loopback address with port 8083 free")


@pytest.fixture
def server_on_8083(transactional_db, tmp_path):
    """A Daphne on <loopback host>:8083 sharing this test's database, and an HTTP server
    for the original page on the same host."""
    host = _free_loopback_host()
    server = DaphneProcess(ORIGINAL_WS_PORT, daphne_env(), tmp_path / "daphne-8083.log", host=host)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(original_dir()))
    handler.log_message = lambda *args: None
    pages = http.server.ThreadingHTTPServer((host, 0), handler)
    threading.Thread(target=pages.serve_forever, daemon=True).start()
    try:
        server.wait_ready()
        yield f"http://{host}:{pages.server_address[1]}/ws_test.html"
    finally:
        pages.shutdown()
        pages.server_close()
        server.stop()


def _frames(log: str) -> list[dict]:
    frames = []
    for line in log.splitlines():
        try:
            frame = json.loads(line)
        except ValueError:
            continue
        if isinstance(frame, dict):
            frames.append(frame)
    return frames


def _events(log: str, event: str) -> list[dict]:
    return [f["data"] for f in _frames(log) if f.get("type") == "event" and f["data"].get("event") == event]


def test_the_original_page_works_against_this_service(devtools_page_url, server_on_8083, make_conversation):
    conversation = make_conversation("alice", ("bob",))
    token = mint_token(user_id="alice")
    out = "document.getElementById('out').textContent"

    async def scenario():
        async with connect(devtools_page_url, max_size=None) as devtools:
            page = Page(devtools)

            async def click(handler: str, wait_for: str):
                await page.js(f"document.querySelector('button[onclick=\"{handler}\"]').click()")
                await page.wait_for(f"{out}.includes({json.dumps(wait_for)})")

            await page.call("Page.navigate", url=server_on_8083)
            await page.wait_for("document.readyState === 'complete' && !!document.getElementById('out')")
            await page.js(f"document.getElementById('token').value = {json.dumps(token)}")
            await click("connect()", "WS connected")
            await page.js(f"document.getElementById('conv').value = {json.dumps(conversation.id)}")
            await click("subscribe()", '"type":"subscribed"')
            await page.js("document.getElementById('text').value = 'hello from the original page'")
            await click("sendMsg()", '"event":"message.created"')
            await page.js("document.getElementById('text').value = 'a chunk'")
            await click("sendChunk(false)", '"event":"message.stream_chunk"')
            await page.js("document.getElementById('text').value = 'the end'")
            await click("sendChunk(true)", '"stream_end":true')
            await page.wait_for(f"{out}.includes('\"event\":\"message.updated\"')")
            await click("unsubscribe()", '"type":"unsubscribed"')
            # Idempotent, as in the original: a second press answers the same.
            await page.js("document.querySelector('button[onclick=\"unsubscribe()\"]').click()")
            await page.wait_for(f"{out}.split('\"type\":\"unsubscribed\"').length === 3")
            await page.js("document.querySelector('button[onclick=\"ping()\"]').click()")  # sends {type: "pong"}
            await asyncio.sleep(0.3)
            await click("disconnect()", "WS closed by client")
            return await page.js(out)

    log = asyncio.run(scenario())
    frames = _frames(log)
    assert not [f for f in frames if f.get("type") == "error"], log
    assert "WS closed: 4" not in log, log  # never closed by the server (4401, 4408, ...)
    created = _events(log, "message.created")
    assert created[0]["message"]["content"] == {"text": "hello from the original page"}
    chunks = _events(log, "message.stream_chunk")
    by_text = {c["message"]["content"]["chunk"]: c for c in chunks}
    assert set(by_text) == {"a chunk", "the end"}, chunks
    first, last = by_text["a chunk"], by_text["the end"]
    for data in (first, last):
        message = data["message"]
        assert message["type"] == "stream_chunk"
        assert message["sender_id"] == "alice"
        assert message["message_id"] == data["message_id"]
        assert isinstance(message["seq"], int) and message["created_at"].endswith("Z")
        assert data["chunk"] == message["content"]["chunk"]  # the original's top-level field too
    assert (first["message"]["stream_end"], last["message"]["stream_end"]) == (False, True)
    # Two button presses, two streams (the page names each chunk's stream by the time).
    assert first["message_id"] != last["message_id"]
    acks = [f for f in frames if f.get("type") == "ack"]
    assert [a["event"] for a in acks] == ["message.sent", "stream.sent", "stream.sent"]
