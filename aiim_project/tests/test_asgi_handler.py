"""The REST API's one-hop ASGI handler (aiim_project.compat.django), driven through the real
ASGI application: same responses as Django's handler, one pooled thread per request from
request_started to request_finished, the connection handed back there, events after commit."""

from __future__ import annotations

import json
import threading

import pytest
from channels.testing import HttpCommunicator
from django.core import signals
from django.core.handlers.asgi import ASGIHandler
from django.db import connection

from aiim_project import asgi, wiring
from aiim_project.compat.django import OneHopASGIHandler
from aiim_project.core.db import in_worker
from aiim_project.rest_direct import DirectPost  # hands its thread's connection back after each call

pytestmark = pytest.mark.django_db(transaction=True)


async def call(app, method: str, path: str, token: str | None = None, body: dict | None = None, accept: str = "") -> dict:
    raw = json.dumps(body).encode() if body is not None else b""
    headers = [(b"content-type", b"application/json"), (b"host", b"127.0.0.1"), (b"content-length", str(len(raw)).encode())]
    if accept:
        headers.append((b"accept", accept.encode()))
    if token:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    comm = HttpCommunicator(app, method, path, body=raw, headers=headers)
    response = await comm.get_response(timeout=10)
    # Until the handler has finished: Django's sends request_finished (which hands the
    # request thread's connection back) after the body; a test that ended first left that
    # connection open, and pytest-django could not drop the test database.
    await comm.wait(timeout=10)
    return response


@pytest.fixture
def seen():
    """Thread and connection state at request_started / request_finished."""
    events: list[tuple[str, str, bool]] = []

    def started(**kw):
        events.append(("started", threading.current_thread().name, connection.connection is not None))

    def finished(**kw):
        # Receivers run in connection order: close_old_connections (connected by django.db)
        # has run, so the request's connection is back in the pool here.
        events.append(("finished", threading.current_thread().name, connection.connection is not None))

    signals.request_started.connect(started)
    signals.request_finished.connect(finished)
    yield events
    signals.request_started.disconnect(started)
    signals.request_finished.disconnect(finished)


def test_api_requests_take_the_one_hop_handler_and_the_rest_django_s():
    http_app = wiring.http_app_of(asgi.application)
    # In front of it, the direct lane of POST /messages (aiim_project.rest_direct).
    assert isinstance(http_app.fast, DirectPost)
    assert isinstance(http_app.fast.app, OneHopASGIHandler)
    assert type(http_app.default) is ASGIHandler
    assert http_app.prefix == "/api/aiim/"


async def test_a_post_runs_on_one_pooled_thread_and_hands_its_connection_back(make_conversation, token, seen):
    conversation = await in_worker(make_conversation)("alice", ["bob"])
    response = await call(
        asgi.application, "POST", "/api/aiim/messages", token("alice"), {"conversation_id": conversation.id, "content": "hi"}
    )
    assert response["status"] == 201, response
    body = json.loads(response["body"])
    assert body["message"]["seq"] == 1 and body["message"]["content"] == "hi"
    headers = dict(response["headers"])
    assert headers[b"Content-Type"] == b"application/json"
    assert headers[b"X-Request-ID"]
    (start_event, finish_event) = seen
    assert start_event[0] == "started" and finish_event[0] == "finished"
    # request_started and request_finished on the same request thread, from the pool...
    assert start_event[1] == finish_event[1] and start_event[1].startswith("aiim-http")
    # ...which holds no database connection once the request is finished.
    assert finish_event[2] is False


async def test_responses_are_the_same_as_django_s_handler(make_conversation, send, token):
    conversation = await in_worker(make_conversation)("alice", ["bob"])
    await in_worker(send)(conversation, "alice", "first")
    stock = ASGIHandler()
    for method, path, tok, body in [
        ("GET", f"/api/aiim/messages/{conversation.id}?limit=5", token("alice"), None),
        ("GET", f"/api/aiim/conversations/{conversation.id}", token("alice"), None),
        ("GET", "/api/aiim/conversations", None, None),  # 401
        ("GET", "/api/aiim/conversations/nope", token("alice"), None),  # 404
        ("GET", "/api/aiim/no/such/path", token("alice"), None),  # the JSON 404
        ("POST", "/api/aiim/messages", token("alice"), {"conversation_id": conversation.id}),  # 400
    ]:
        ours = await call(asgi.application, method, path, tok, body)
        theirs = await call(stock, method, path, tok, body)
        assert ours["status"] == theirs["status"], path
        assert ours["body"] == theirs["body"], path
        strip = {b"X-Request-ID"}
        assert [h for h in ours["headers"] if h[0] not in strip] == [h for h in theirs["headers"] if h[0] not in strip], path


async def test_the_api_chain_leaves_out_the_admin_s_session_and_csrf_middleware(token):
    """The API keeps no state between requests: no session, no CSRF cookie, and the
    browsable API page still renders."""
    ours = await call(asgi.application, "GET", "/api/aiim/conversations", token("alice"), accept="text/html")
    theirs = await call(ASGIHandler(), "GET", "/api/aiim/conversations", token("alice"), accept="text/html")
    assert ours["status"] == theirs["status"] == 200
    assert dict(ours["headers"])[b"Content-Type"].startswith(b"text/html")
    assert b"Set-Cookie" in dict(theirs["headers"])  # the stock chain's CSRF cookie
    assert b"Set-Cookie" not in dict(ours["headers"])
    # Origin: django-cors-headers' answer depends on it (CORS_ALLOWED_ORIGINS).
    assert dict(ours["headers"])[b"Vary"] == b"Accept, origin"


async def test_paths_outside_the_api_keep_django_s_handler(seen):
    response = await call(asgi.application, "GET", "/health/live")
    assert response["status"] == 200
    # Django's handler: its own thread per request, not the REST pool.
    assert seen and not seen[0][1].startswith("aiim-http")


async def test_message_created_is_published_after_the_commit(make_conversation, token, monkeypatch):
    from django.db import transaction

    from aiim_project.core import events

    conversation = await in_worker(make_conversation)("alice", ["bob"])
    published: list[tuple[str, bool]] = []
    real = events.publish_now

    def spy(groups, message):
        published.append((message["event"], transaction.get_connection().in_atomic_block))
        real(groups, message)

    monkeypatch.setattr(events, "publish_now", spy)
    response = await call(
        asgi.application, "POST", "/api/aiim/messages", token("alice"), {"conversation_id": conversation.id, "content": "hi"}
    )
    assert response["status"] == 201
    assert published == [("message.created", False)]
