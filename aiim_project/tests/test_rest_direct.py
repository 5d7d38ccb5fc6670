"""The direct lane of POST /api/aiim/messages (aiim_project.rest_direct), driven through the
real ASGI application: it answers plain posts with the chain's status, body and headers,
keeps idempotency, tenancy and the rate limit, and leaves every other request to Django."""

from __future__ import annotations

import json

import pytest
from channels.testing import HttpCommunicator
from prometheus_client import REGISTRY

from aiim_project import asgi
from aiim_project.core.db import in_worker
from messaging.views import MessageSendView

pytestmark = pytest.mark.django_db(transaction=True)

VOLATILE = {"message_id", "conversation_id", "created_at"}


async def call(body, token: str | None, *, raw: bytes | None = None, extra: list | None = None, path: str = "/api/aiim/messages"):
    data = raw if raw is not None else json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"host", b"127.0.0.1"), (b"content-length", str(len(data)).encode())]
    if token:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    comm = HttpCommunicator(asgi.application, "POST", path, body=data, headers=[*headers, *(extra or [])])
    response = await comm.get_response(timeout=10)
    is_json = dict(response["headers"]).get(b"Content-Type", b"").startswith(b"application/json")
    response["json"] = json.loads(response["body"]) if response["body"] and is_json else None
    return response


def normalized(response) -> tuple:
    body = response["json"]
    if isinstance(body, dict) and isinstance(body.get("message"), dict):
        body = {**body, "message": {k: v for k, v in body["message"].items() if k not in VOLATILE}}
    headers = [(k, v) for k, v in response["headers"] if k not in (b"X-Request-ID", b"Content-Length")]
    return response["status"], body, headers


@pytest.fixture
def chain_calls(monkeypatch):
    """How many requests reached DRF's view (the lane's fallbacks and the chain)."""
    calls = []
    real = MessageSendView.post

    def post(self, request):
        calls.append(request.path)
        return real(self, request)

    monkeypatch.setattr(MessageSendView, "post", post)
    return calls


def script(conversation: str, foreign: str) -> list[tuple[dict | None, str | None, bytes | None]]:
    """(body, user, raw body): new, repeat, errors of every kind."""
    return [
        ({"conversation_id": conversation, "client_msg_id": "a", "content": {"text": "héllo"}}, "alice", None),
        ({"conversation_id": conversation, "client_msg_id": "a", "content": {"text": "again"}}, "alice", None),  # repeat
        ({"conversation_id": conversation, "content": "no id", "metadata": {"k": 1}}, "bob", None),
        ({"conversation_id": conversation, "content": "x"}, "carol", None),  # not a member
        ({"conversation_id": foreign, "content": "x"}, "alice", None),  # another tenant's
        ({"conversation_id": conversation, "content": "x", "tenant_id": "other"}, "alice", None),
        ({"conversation_id": conversation, "content": "x", "reply_to": "nope"}, "alice", None),
        ({"conversation_id": conversation}, "alice", None),  # no content
        ({"conversation_id": conversation, "content": "x", "type": "bogus"}, "alice", None),
        ({"conversation_id": conversation, "content": "x"}, None, None),  # no token
        ({"conversation_id": conversation, "content": "x"}, "forged", None),
        (None, "alice", b'{"conversation_id": '),  # malformed
        (None, "alice", b'{"conversation_id": "c", "content": NaN}'),
        (None, "alice", b"[1, 2]"),
        (None, "alice", b""),
    ]


async def test_the_lane_answers_like_the_chain(make_conversation, token, settings, chain_calls):
    def tok(user):
        if user is None:
            return None
        return token(user) + "x" if user == "forged" else token(user)

    answers = {}
    for lane in (True, False):
        settings.REST_DIRECT_POST = lane
        conversation = await in_worker(make_conversation)("alice", ["bob"])
        foreign = await in_worker(make_conversation)("alice", ["bob"], tenant="other")
        answers[lane] = [normalized(await call(body, tok(user), raw=raw)) for body, user, raw in script(conversation.id, foreign.id)]
    for ours, theirs in zip(answers[True], answers[False], strict=True):
        assert ours == theirs
    statuses = [a[0] for a in answers[True]]
    assert statuses == [201, 200, 201, 403, 404, 403, 400, 400, 400, 401, 401, 400, 400, 400, 400], statuses
    # With the lane on, DRF's view saw only the 7 refusals before the rate limit (tenant_id,
    # content, type, 4 bodies; no token never reaches it); with it off, all 13 with a token.
    assert len(chain_calls) == 7 + 13


async def test_a_repeat_answers_with_the_original_and_seqs_stay_in_order(make_conversation, token, chain_calls):
    conversation = await in_worker(make_conversation)("alice", ["bob"])
    seqs = []
    for i in range(5):
        response = await call({"conversation_id": conversation.id, "client_msg_id": f"m{i}", "content": str(i)}, token("alice"))
        assert response["status"] == 201
        seqs.append(response["json"]["message"]["seq"])
    repeat = await call({"conversation_id": conversation.id, "client_msg_id": "m2", "content": "other"}, token("alice"))
    assert repeat["status"] == 200 and repeat["json"]["message"]["seq"] == 3 and repeat["json"]["message"]["content"] == "2"
    assert seqs == [1, 2, 3, 4, 5]
    assert chain_calls == []


async def test_the_rate_limit_counts_and_refuses_on_the_lane(make_conversation, token, settings, chain_calls):
    settings.RATE_LIMIT_PER_SEC = 2
    conversation = await in_worker(make_conversation)("alice", ["bob"])
    statuses = []
    for i in range(6):
        response = await call({"conversation_id": conversation.id, "content": str(i)}, token("alice"))
        statuses.append(response["status"])
        if response["status"] == 429:
            assert dict(response["headers"])[b"Retry-After"] in (b"1", b"2")
            assert response["json"]["code"] == "rate_limited"
    assert statuses.count(429) >= 2  # at most 2 per one-second window: 6 posts span <= 2 windows
    assert chain_calls == []


async def test_requests_the_lane_leaves_to_django(make_conversation, token, settings, chain_calls):
    settings.CORS_ALLOWED_ORIGINS = ["https://app.example"]
    conversation = await in_worker(make_conversation)("alice", ["bob"])
    body = {"conversation_id": conversation.id, "content": "x"}
    cors = await call(body, token("alice"), extra=[(b"origin", b"https://app.example")])
    assert cors["status"] == 201
    assert dict(cors["headers"])[b"access-control-allow-origin"] == b"https://app.example"
    html = await call(body, token("alice"), extra=[(b"accept", b"text/html")])
    assert html["status"] == 201 and dict(html["headers"])[b"Content-Type"].startswith(b"text/html")
    query = await call(body, token("alice"), path="/api/aiim/messages?format=json")
    assert query["status"] == 201
    form = await call(None, token("alice"), raw=b"conversation_id=x", extra=[(b"content-type", b"text/plain")])
    assert form["status"] == 400
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
    large = await call({**body, "content": "y" * 200}, token("alice"))
    assert large["status"] == 413 or large["status"] == 400
    assert len(chain_calls) == 5


async def test_the_lane_keeps_the_request_id_and_the_metrics(make_conversation, token):
    conversation = await in_worker(make_conversation)("alice", ["bob"])

    def sample(name, **labels):
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before = (
        sample("http_requests_total", method="POST", path="/api/aiim/messages", status="201"),
        sample("django_http_responses_total_by_status_total", status="201"),
        sample("aiim_messages_created_total", via="rest"),
    )
    response = await call({"conversation_id": conversation.id, "content": "x"}, token("alice"), extra=[(b"x-request-id", b"abc-123")])
    assert response["status"] == 201
    assert dict(response["headers"])[b"X-Request-ID"] == b"abc-123"
    after = (
        sample("http_requests_total", method="POST", path="/api/aiim/messages", status="201"),
        sample("django_http_responses_total_by_status_total", status="201"),
        sample("aiim_messages_created_total", via="rest"),
    )
    assert [b - a for a, b in zip(before, after, strict=True)] == [1, 1, 1]
