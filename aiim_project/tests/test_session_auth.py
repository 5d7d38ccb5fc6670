"""SessionTokenAuthentication on the REST API's real path (aiim_project.asgi.application,
through the one-hop handler, which runs no session or CSRF middleware): a browser's login
session authenticates like the bearer token it holds, with CSRF enforced on unsafe methods."""

from __future__ import annotations

import json
from http.cookies import SimpleCookie
from importlib import import_module

import pytest
from channels.testing import HttpCommunicator
from django.conf import settings
from django.middleware.csrf import _get_new_csrf_string, _mask_cipher_secret

from aiim_project import asgi
from aiim_project.core.db import in_worker
from aiim_project.session_auth import SESSION_TOKEN_KEY

pytestmark = pytest.mark.django_db(transaction=True)


def login_session(token: str) -> str:
    """A session as /api-auth/login leaves it: the token under its key."""
    session = import_module(settings.SESSION_ENGINE).SessionStore()
    session[SESSION_TOKEN_KEY] = token
    session.create()
    return session.session_key


async def call(method: str, path: str, *, session: str | None = None, csrf: str | None = None,
               csrf_header: str | None = None, bearer: str | None = None, body: dict | None = None) -> tuple[int, dict, dict]:
    raw = json.dumps(body).encode() if body is not None else b""
    headers = [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
    cookie = SimpleCookie()
    if session:
        cookie[settings.SESSION_COOKIE_NAME] = session
    if csrf:
        cookie[settings.CSRF_COOKIE_NAME] = csrf
    if cookie:
        headers.append((b"cookie", "; ".join(f"{k}={m.value}" for k, m in cookie.items()).encode()))
    if csrf_header:
        headers.append((b"x-csrftoken", csrf_header.encode()))
    if bearer:
        headers.append((b"authorization", f"Bearer {bearer}".encode()))
    response = await HttpCommunicator(asgi.application, method, path, body=raw, headers=headers).get_response(timeout=10)
    return response["status"], dict(response["headers"]), json.loads(response["body"] or b"{}")


@pytest.fixture
def session_for():
    return in_worker(login_session)


async def test_a_session_reads_the_same_as_the_bearer_token(session_for, make_conversation, token):
    conversation = await in_worker(make_conversation)("alice", ["bob"])
    session = await session_for(token("alice"))
    status, _, by_session = await call("GET", "/api/aiim/conversations", session=session)
    assert status == 200
    status, _, by_bearer = await call("GET", "/api/aiim/conversations", bearer=token("alice"))
    assert by_session == by_bearer
    assert [c["conversation_id"] for c in by_session["conversations"]] == [conversation.id]


async def test_a_post_without_the_csrf_token_is_refused_and_writes_nothing(session_for, token):
    session = await session_for(token("alice"))
    secret = _get_new_csrf_string()
    body = {"type": "group", "member_ids": ["bob"]}
    for csrf, header in ((None, None), (secret, None), (secret, _get_new_csrf_string())):
        status, _, error = await call("POST", "/api/aiim/conversations", session=session, csrf=csrf, csrf_header=header, body=body)
        assert status == 403
        assert error["code"] == "forbidden" and error["detail"].startswith("CSRF Failed")
    status, _, listed = await call("GET", "/api/aiim/conversations", session=session)
    assert listed["conversations"] == []


async def test_a_post_with_the_csrf_token_answers_as_over_the_bearer_token(session_for, token):
    session = await session_for(token("alice"))
    secret = _get_new_csrf_string()
    body = {"type": "group", "name": "by session", "member_ids": ["bob"]}
    status, _, created = await call(
        "POST", "/api/aiim/conversations", session=session, csrf=secret, csrf_header=_mask_cipher_secret(secret), body=body
    )
    assert status == 201
    status, _, message = await call(
        "POST", "/api/aiim/messages", session=session, csrf=secret, csrf_header=secret,
        body={"conversation_id": created["conversation_id"], "content": "hi"},
    )
    assert status == 201 and message["message"]["sender_id"] == "alice" and message["message"]["seq"] == 1
    status, _, by_bearer = await call("GET", f"/api/aiim/conversations/{created['conversation_id']}", bearer=token("alice"))
    assert by_bearer["name"] == "by session" and by_bearer["last_message"]["content"] == "hi"


async def test_another_tenant_s_conversation_is_missing_for_a_session_too(session_for, make_conversation, token):
    theirs = await in_worker(make_conversation)("alice", ["bob"], tenant="acme")
    session = await session_for(token("alice", tenant="default"))
    status, _, other = await call("GET", f"/api/aiim/conversations/{theirs.id}", session=session)
    status_missing, _, missing = await call("GET", "/api/aiim/conversations/no-such-id", session=session)
    assert (status, other) == (status_missing, missing) == (404, {"detail": "Conversation not found.", "code": "not_found"})


async def test_the_rate_limit_counts_session_requests(session_for, token, settings):
    settings.RATE_LIMIT_PER_SEC = 2
    session = await session_for(token("alice"))
    secret = _get_new_csrf_string()
    statuses = []
    for _ in range(5):
        status, headers, body = await call(
            "POST", "/api/aiim/conversations", session=session, csrf=secret, csrf_header=secret,
            body={"type": "group", "member_ids": ["bob"]},
        )
        statuses.append(status)
        if status == 429:
            assert body["code"] == "rate_limited" and b"Retry-After" in headers
    # Five posts span at most two one-second windows of two.
    assert 429 in statuses and set(statuses) <= {201, 429}


async def test_an_expired_token_in_the_session_answers_token_expired(session_for, token):
    session = await session_for(token("alice", ttl=-10))
    status, headers, error = await call("GET", "/api/aiim/conversations", session=session)
    assert (status, error["code"]) == (401, "token_expired")
    assert headers[b"WWW-Authenticate"] == b'Bearer realm="aiim"'


async def test_the_bearer_header_wins_and_needs_no_csrf_token(session_for, token):
    session = await session_for(token("alice"))
    status, _, created = await call(
        "POST", "/api/aiim/conversations", session=session, bearer=token("bob"), body={"type": "group", "member_ids": ["carol"]}
    )
    assert status == 201
    assert sorted(m["user_id"] for m in created["members"]) == ["bob", "carol"]


async def test_no_session_or_a_session_without_a_token_is_not_authenticated(token):
    admin_only = await in_worker(lambda: _session_with({"_auth_user_id": "1"}))()
    for session in (None, "no-such-session-key", admin_only):
        status, headers, error = await call("GET", "/api/aiim/conversations", session=session)
        assert (status, error["code"]) == (401, "not_authenticated")
        assert headers[b"WWW-Authenticate"] == b'Bearer realm="aiim"'


def _session_with(data: dict) -> str:
    session = import_module(settings.SESSION_ENGINE).SessionStore()
    session.update(data)
    session.create()
    return session.session_key
