"""EventSource in a real headless Chromium, on a page of another origin that CORS_ALLOWED_ORIGINS
allows: it receives the conversation's events, and when the server goes away and comes back
it reconnects by itself with Last-Event-ID and gets exactly what it missed (no gap, no
duplicate). A page of an origin not allowed gets nothing.

The pages come from a throwaway static server on their own ports (so their own origins);
Chromium is driven over the DevTools protocol as in aiim_project/tests/test_ws_test_browser.py.
"""

from __future__ import annotations

import asyncio
import json
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
from websockets.asyncio.client import connect

from aiim_project.core.auth import mint_token
from tests.support.devtools import Page
from tests.support.ports import free_port
from tests.support.sse import post_message

pytestmark = pytest.mark.e2e

PAGE = """<!doctype html><meta charset="utf-8"><title>sse</title><pre id="log"></pre>
<script>
window.got = []; window.subscribed = []; window.errors = 0; window.cors = 'none';
function start(url) {
  const es = new EventSource(url);
  window.es = es;
  es.addEventListener('subscribed', e => window.subscribed.push({id: e.lastEventId, data: JSON.parse(e.data)}));
  es.addEventListener('message.created', e => {
    const m = JSON.parse(e.data).message;
    window.got.push({id: e.lastEventId, seq: m.seq, content: m.content});
    document.getElementById('log').textContent += m.seq + ' ';
  });
  es.onerror = () => { window.errors += 1; };
}
</script>"""


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def page_origin(tmp_path):
    """origin() -> "http://127.0.0.1:<port>", a static server of the test page."""
    (tmp_path / "page.html").write_text(PAGE)
    servers = []

    def make() -> str:
        port = free_port()
        httpd = ThreadingHTTPServer(("127.0.0.1", port), partial(_Quiet, directory=str(tmp_path)))
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{port}"

    yield make
    for httpd in servers:
        httpd.shutdown()


async def open_page(devtools_url: str, origin: str):
    ws = await connect(devtools_url, max_size=None)
    page = Page(ws)
    await page.call("Page.navigate", url=f"{origin}/page.html")
    await page.wait_for("document.readyState === 'complete' && typeof start === 'function'")
    return ws, page


def test_event_source_from_an_allowed_origin_resumes_after_the_server_drops_it(
    devtools_page_url, daphne, page_origin, make_conversation
):
    allowed = page_origin()
    server = daphne(1, CORS_ALLOWED_ORIGINS=allowed)[0]
    conversation = make_conversation("alice", ("bob",))
    alice, bob = mint_token(user_id="alice"), mint_token(user_id="bob")
    url = f"{server.url}/api/aiim/conversations/{conversation.id}/events?token={bob}"

    async def scenario():
        ws, page = await open_page(devtools_page_url, allowed)
        try:
            await page.js(f"start({json.dumps(url)})")
            await page.wait_for("window.subscribed.length === 1")
            for i in range(3):
                await asyncio.to_thread(post_message, server, alice, conversation.id, f"live {i}")
            await page.wait_for("window.got.length === 3")
            # The server goes away; messages are written meanwhile (straight to the database).
            await asyncio.to_thread(server.stop)
            from messaging import services

            for i in range(3):
                await asyncio.to_thread(
                    services.message_send, tenant="default", sender="alice", conversation_id=conversation.id, content=f"away {i}"
                )
            await page.wait_for("window.errors >= 1")
            await asyncio.to_thread(server.restart)
            await page.wait_for("window.subscribed.length === 2", timeout=20)
            await page.wait_for("window.got.length === 6")
            await asyncio.to_thread(post_message, server, alice, conversation.id, "after")
            await page.wait_for("window.got.length === 7")
            return await page.js("({got: window.got, subscribed: window.subscribed})")
        finally:
            await ws.close()

    seen = asyncio.run(scenario())
    assert [g["seq"] for g in seen["got"]] == [1, 2, 3, 4, 5, 6, 7]
    assert [g["id"] for g in seen["got"]] == ["1", "2", "3", "4", "5", "6", "7"]
    assert [g["content"] for g in seen["got"]] == ["live 0", "live 1", "live 2", "away 0", "away 1", "away 2", "after"]
    # The reconnect resumed from the last id the browser saw, by itself (Last-Event-ID).
    assert seen["subscribed"][0]["id"] == "0"
    assert seen["subscribed"][1]["id"] == "3"
    assert seen["subscribed"][1]["data"]["last_seq"] == 6


def test_event_source_from_another_origin_gets_nothing(devtools_page_url, daphne, page_origin, make_conversation):
    allowed, other = page_origin(), page_origin()
    server = daphne(1, CORS_ALLOWED_ORIGINS=allowed)[0]
    conversation = make_conversation("alice", ("bob",))
    url = f"{server.url}/api/aiim/conversations/{conversation.id}/events?token={mint_token(user_id='bob')}"

    async def scenario():
        ws, page = await open_page(devtools_page_url, other)
        try:
            await page.js(f"start({json.dumps(url)})")
            # A CORS failure is fatal for EventSource: it closes (readyState 2) and never retries.
            await page.wait_for("window.errors >= 1 && window.es.readyState === 2")
            await asyncio.to_thread(post_message, server, mint_token(user_id="alice"), conversation.id, "unseen")
            await asyncio.sleep(1)
            return await page.js("({got: window.got.length, subscribed: window.subscribed.length})")
        finally:
            await ws.close()

    assert asyncio.run(scenario()) == {"got": 0, "subscribed": 0}
