"""Hostile REST input: never a 500, always the error body of docs/protocol.md section 2.

SQL and LIKE metacharacters in ids must behave exactly like any other unknown id (the ORM
binds parameters; a `%` must not match everything)."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.django_db

METACHARACTERS = ["%", "_", "%25", "'", "' OR '1'='1", "\\", "%_%", "*", "a%", "1;DROP TABLE messaging_message"]


def assert_error(response, status: int, code: str) -> None:
    assert response.status_code == status, (response.status_code, response.content[:300])
    body = response.json()
    assert body["code"] == code and isinstance(body["detail"], str), body


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 100_000,
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        b"\xff\xfe\xfd",
        b'{"conversation_id": "x", "content": "\xff"}',
        b'{"conversation_id": "x", "content": "\\ud800"}',
        b'{"conversation_id": "x", "content": "a\\u0000b"}',
        b"{",
        b"null",
        b"[]",
        b'"text"',
        b"1e999999",
        b'{"conversation_id": ["x"], "content": "a"}',
    ],
    ids=["deep-array", "deep-object", "invalid-utf8", "invalid-utf8-in-string", "lone-surrogate", "nul-in-content",
         "truncated", "null", "array", "string", "huge-number", "wrong-type"],
)
def test_malformed_send_bodies_are_400_or_404(api, make_conversation, raw):
    conversation = make_conversation("alice")
    body = raw.replace(b'"x"', json.dumps(conversation.id).encode())
    response = api("alice").generic("POST", "/api/aiim/messages", body, content_type="application/json")
    assert response.status_code in (400, 404), (response.status_code, response.content[:300])
    assert response.json()["code"] in ("invalid", "not_found")


def test_deeply_nested_content_within_the_limits_is_stored_or_refused_cleanly(api, make_conversation):
    conversation = make_conversation("alice")
    for depth in (50, 500, 2000):
        raw = f'{{"conversation_id": "{conversation.id}", "content": {"[" * depth}{"]" * depth}}}'
        response = api("alice").generic("POST", "/api/aiim/messages", raw.encode(), content_type="application/json")
        assert response.status_code in (201, 400), (depth, response.status_code, response.content[:200])


def test_oversized_body_is_413(api, make_conversation, settings):
    conversation = make_conversation("alice")
    content = "x" * (settings.MAX_MESSAGE_BYTES + 1)
    response = api("alice").post("/api/aiim/messages", {"conversation_id": conversation.id, "content": content}, format="json")
    assert_error(response, 413, "too_large")


@pytest.mark.parametrize(
    "query",
    ["limit=100000000000000000000000000", "limit=-1", "limit=0", "limit=abc", "limit=1e3", "after_seq=99999999999999999999999",
     "after_seq=-1", "before_seq=NaN", "before_seq=%00", "limit=201"],
)
def test_bad_history_parameters_are_400(api, make_conversation, query):
    conversation = make_conversation("alice")
    assert_error(api("alice").get(f"/api/aiim/messages/{conversation.id}?{query}"), 400, "invalid")


def test_huge_list_limit_is_400(api):
    assert_error(api("alice").get("/api/aiim/conversations?limit=99999999999999999999"), 400, "invalid")


@pytest.mark.parametrize("bad_id", METACHARACTERS)
def test_metacharacters_in_ids_are_unknown_ids(api, make_conversation, send, bad_id):
    from urllib.parse import quote

    conversation = make_conversation("alice")
    send(conversation, "alice")
    alice, enc = api("alice"), quote(bad_id, safe="")
    assert_error(alice.get(f"/api/aiim/conversations/{enc}"), 404, "not_found")
    assert_error(alice.get(f"/api/aiim/messages/{enc}"), 404, "not_found")
    assert_error(alice.get(f"/api/aiim/messages/{conversation.id}?before_id={enc}"), 404, "not_found")
    assert_error(alice.get(f"/api/aiim/receipts/{conversation.id}/{enc}"), 404, "not_found")
    assert_error(alice.post("/api/aiim/messages", {"conversation_id": bad_id, "content": "x"}, format="json"), 404, "not_found")
    assert_error(
        alice.post("/api/aiim/receipts/read", {"conversation_id": bad_id, "last_read_seq": 1}, format="json"), 404, "not_found"
    )
    # A LIKE wildcard as a user id matches nobody.
    assert_error(alice.delete(f"/api/aiim/conversations/{conversation.id}/members/{enc}"), 404, "not_found")
    presence = alice.get(f"/api/aiim/presence?user_ids={enc}")
    assert presence.status_code in (200, 400)
    if presence.status_code == 200:
        assert [p["online"] for p in presence.json()["presence"]] == [False]
