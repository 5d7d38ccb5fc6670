"""REST API of docs/protocol.md section 2: conversations, members and messages.

Every endpoint: success, validation error, 401 (missing, forged, expired token), 403 for a
non-member, 404 for an unknown id, and another tenant's id answering exactly like 404.
"""

from __future__ import annotations

import base64
import time
from datetime import timedelta

import jwt
import pytest
from django.db import connection
from django.db.models import F
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from messaging.models import Conversation, Member, Message

pytestmark = pytest.mark.django_db

API = "/api/aiim"

CONVERSATION_KEYS = {
    "conversation_id", "type", "name", "metadata", "created_at", "updated_at", "last_seq",
    "members", "last_message", "unread_count",
}
MESSAGE_KEYS = {
    "message_id", "conversation_id", "sender_id", "type", "content", "seq", "created_at", "edited_at",
    "reply_to", "client_msg_id", "metadata", "status", "stream",
}


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["code"] == code, body
    assert isinstance(body["detail"], str) and body["detail"]
    return body


@pytest.fixture
def world(make_conversation, send):
    """alice owns a group with bob; carol is in the tenant but not in it; "other" tenant has
    its own conversation (alice there is a different user)."""
    group = make_conversation("alice", ["bob"], type="group", name="g")
    send(group, "alice", "first")
    other = make_conversation("alice", ["bob"], type="group", tenant="other")
    return {"group": group.id, "other": other.id}


# Each endpoint: how to call it for a conversation id. Ids are filled in by the tests.
ENDPOINTS = {
    "create": ("post", lambda c: "/conversations", lambda c: {"type": "group", "member_ids": ["bob"]}),
    "list": ("get", lambda c: "/conversations", None),
    "detail": ("get", lambda c: f"/conversations/{c}", None),
    "add_members": ("post", lambda c: f"/conversations/{c}/members", lambda c: {"user_ids": ["dave"]}),
    "remove_member": ("delete", lambda c: f"/conversations/{c}/members/bob", None),
    "send": ("post", lambda c: "/messages", lambda c: {"conversation_id": c, "content": "hi"}),
    "history": ("get", lambda c: f"/messages/{c}", None),
}
WITH_ID = ["detail", "add_members", "remove_member", "send", "history"]


def call(client: APIClient, name: str, conversation_id: str):
    method, path, body = ENDPOINTS[name]
    kwargs = {"format": "json"} if body else {}
    args = (body(conversation_id),) if body else ()
    return getattr(client, method)(API + path(conversation_id), *args, **kwargs)


# --- authentication -------------------------------------------------------------------


def _forged() -> str:
    return jwt.encode({"sub": "alice", "tenant": "default"}, "not-the-secret-" * 4, algorithm="HS256")


@pytest.mark.parametrize("name", ENDPOINTS)
@pytest.mark.parametrize(
    "credentials, code",
    [
        (None, "not_authenticated"),
        ("forged", "token_invalid"),
        ("expired", "token_expired"),
        ("garbage", "token_invalid"),
    ],
)
def test_every_endpoint_refuses_bad_tokens(world, token, name, credentials, code):
    client = APIClient()
    if credentials == "forged":
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {_forged()}")
    elif credentials == "expired":
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token('alice', ttl=-30)}")
    elif credentials == "garbage":
        client.credentials(HTTP_AUTHORIZATION="Bearer not.a.jwt")
    response = call(client, name, world["group"])
    assert_error(response, 401, code)
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert Message.objects.count() == 1 and Conversation.objects.count() == 2


# --- 403 / 404 / other tenant ---------------------------------------------------------


@pytest.mark.parametrize("name", WITH_ID)
def test_non_member_is_forbidden(world, api, name):
    assert_error(call(api("carol"), name, world["group"]), 403, "forbidden")


@pytest.mark.parametrize("name", WITH_ID)
def test_other_tenants_id_answers_exactly_like_an_unknown_one(world, api, name):
    unknown = call(api("alice"), name, "no-such-conversation")
    foreign = call(api("alice"), name, world["other"])
    assert_error(unknown, 404, "not_found")
    assert (foreign.status_code, foreign.json()) == (unknown.status_code, unknown.json())
    assert Member.objects.filter(conversation_id=world["other"]).count() == 2
    assert not Message.objects.filter(conversation_id=world["other"]).exists()


@pytest.mark.parametrize("name", ["create", "add_members", "send"])
def test_tenant_id_in_body_must_match_the_token(world, api, name):
    method, path, body = ENDPOINTS[name]
    payload = {**body(world["group"]), "tenant_id": "other"}
    response = getattr(api("alice"), method)(API + path(world["group"]), payload, format="json")
    assert_error(response, 403, "tenant_mismatch")
    same = {**body(world["group"]), "tenant_id": "default"}
    assert getattr(api("alice"), method)(API + path(world["group"]), same, format="json").status_code in (200, 201)


# --- conversations --------------------------------------------------------------------


def test_create_group_conversation(api):
    r = api("alice").post(
        f"{API}/conversations",
        {"type": "group", "name": "team", "member_ids": ["bob"], "members": [{"user_id": "bot", "role": "assistant"}],
         "metadata": {"topic": "x"}},
        format="json",
    )
    assert r.status_code == 201, r.content
    body = r.json()
    assert set(body) == CONVERSATION_KEYS
    assert (body["type"], body["name"], body["metadata"], body["last_seq"]) == ("group", "team", {"topic": "x"}, 0)
    roles = {m["user_id"]: m["role"] for m in body["members"]}
    assert roles == {"alice": "owner", "bob": "member", "bot": "assistant"}
    assert body["members"][0]["user_id"] == "alice"
    assert body["last_message"] is None and body["unread_count"] == 0
    assert body["created_at"].endswith("Z")


def test_direct_conversation_is_deduplicated_per_pair_and_tenant(api):
    first = api("alice").post(f"{API}/conversations", {"member_ids": ["bob"]}, format="json")
    assert first.status_code == 201 and first.json()["type"] == "direct"
    again = api("alice").post(f"{API}/conversations", {"member_ids": ["bob"]}, format="json")
    reverse = api("bob").post(f"{API}/conversations", {"type": "direct", "member_ids": ["alice"]}, format="json")
    assert again.status_code == reverse.status_code == 200
    assert again.json()["conversation_id"] == reverse.json()["conversation_id"] == first.json()["conversation_id"]
    elsewhere = api("alice", tenant="other").post(f"{API}/conversations", {"member_ids": ["bob"]}, format="json")
    assert elsewhere.status_code == 201
    assert elsewhere.json()["conversation_id"] != first.json()["conversation_id"]


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"type": "direct", "member_ids": ["bob", "carol"]}, "member_ids"),
        ({"type": "direct", "member_ids": ["alice"]}, "member_ids"),
        ({"type": "direct", "member_ids": []}, "member_ids"),
        ({"type": "channel", "member_ids": ["bob"]}, "type"),
        ({"member_ids": "bob"}, "member_ids"),
        ({"member_ids": [""]}, "member_ids"),
        ({"member_ids": [{"id": 1}]}, "member_ids"),
        ({"type": "group", "members": [{"user_id": "bob", "role": "king"}]}, "members"),
        ({"type": "group", "metadata": [1, 2]}, "metadata"),
        ({"type": "group", "name": "x" * 201}, "name"),
    ],
)
def test_create_conversation_validation(api, payload, field):
    body = assert_error(api("alice").post(f"{API}/conversations", payload, format="json"), 400, "invalid")
    assert field in body["errors"]
    assert not Conversation.objects.exists()


def test_get_conversation(world, api):
    r = api("bob").get(f"{API}/conversations/{world['group']}")
    assert r.status_code == 200
    body = r.json()
    assert set(body) == CONVERSATION_KEYS
    assert body["last_seq"] == 1 and body["unread_count"] == 1
    assert body["last_message"]["content"] == "first" and set(body["last_message"]) == MESSAGE_KEYS
    assert api("alice").get(f"{API}/conversations/{world['group']}/").status_code == 200


def test_list_conversations_most_recent_first_with_cursor(api, make_conversation, send):
    convs = [make_conversation("alice", [f"u{i}"]) for i in range(5)]
    # Created a minute ago: `updated_at` moves to the second of a message (docs/protocol.md).
    Conversation.objects.filter(pk__in=[c.pk for c in convs]).update(updated_at=F("updated_at") - timedelta(minutes=1))
    send(convs[0], "u0", "wake up")  # the oldest becomes the most recent
    seen, cursor = [], None
    for _ in range(5):
        url = f"{API}/conversations?limit=2" + (f"&cursor={cursor}" if cursor else "")
        r = api("alice").get(url)
        assert r.status_code == 200, r.content
        body = r.json()
        assert len(body["conversations"]) <= 2
        seen += [c["conversation_id"] for c in body["conversations"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == [convs[0].id] + [c.id for c in reversed(convs[1:])]
    first = api("alice").get(f"{API}/conversations").json()["conversations"][0]
    assert first["unread_count"] == 1 and first["last_message"]["content"] == "wake up"
    assert api("u1").get(f"{API}/conversations").json()["conversations"][0]["conversation_id"] == convs[1].id


@pytest.mark.parametrize("query", ["limit=0", "limit=201", "limit=-1", "limit=abc", "limit=99999999999999999999999",
                                   "cursor=%%%", "cursor=bm90IGEgY3Vyc29y", "cursor=MjAyMC0wMS0wMXx4"])
def test_list_conversations_bad_query(world, api, query):
    assert_error(api("alice").get(f"{API}/conversations?{query}"), 400, "invalid")


def _count_list_queries(api) -> int:
    client = api("alice")
    with CaptureQueriesContext(connection) as ctx:
        r = client.get(f"{API}/conversations?limit=50")
    assert r.status_code == 200
    return len(ctx.captured_queries), len(r.json()["conversations"])


def test_conversation_list_runs_constant_queries(api, make_conversation, send, django_assert_num_queries):
    for i in range(2):
        send(make_conversation("alice", [f"a{i}", f"b{i}"]), f"a{i}", "x")
    small, n_small = _count_list_queries(api)
    for i in range(18):
        send(make_conversation("alice", [f"c{i}", f"d{i}"]), "alice", "y")
    large, n_large = _count_list_queries(api)
    assert (n_small, n_large) == (2, 20)
    assert small == large
    with django_assert_num_queries(large):
        api("alice").get(f"{API}/conversations")


# --- members --------------------------------------------------------------------------


def test_add_members(world, api):
    r = api("alice").post(f"{API}/conversations/{world['group']}/members", {"user_ids": ["dave", "bot"], "role": "assistant"}, format="json")
    assert r.status_code == 200, r.content
    roles = {m["user_id"]: m["role"] for m in r.json()["members"]}
    assert roles == {"alice": "owner", "bob": "member", "dave": "assistant", "bot": "assistant"}
    dave = r.json()["members"][2]
    assert dave["last_read_seq"] == 1  # history before joining does not count as unread
    assert api("dave").get(f"{API}/conversations/{world['group']}").json()["unread_count"] == 0


def test_only_an_owner_adds_members_and_never_to_a_direct_conversation(world, api, make_conversation):
    assert_error(api("bob").post(f"{API}/conversations/{world['group']}/members", {"user_ids": ["dave"]}, format="json"), 403, "forbidden")
    direct = make_conversation("alice", ["bob"], type="direct")
    assert_error(api("alice").post(f"{API}/conversations/{direct.id}/members", {"user_ids": ["dave"]}, format="json"), 403, "forbidden")
    assert not Member.objects.filter(user_id="dave").exists()


@pytest.mark.parametrize("payload, field", [({}, "user_ids"), ({"user_ids": []}, "user_ids"), ({"user_ids": "dave"}, "user_ids"),
                                            ({"user_ids": ["dave"], "role": "boss"}, "role")])
def test_add_members_validation(world, api, payload, field):
    body = assert_error(api("alice").post(f"{API}/conversations/{world['group']}/members", payload, format="json"), 400, "invalid")
    assert field in body["errors"]


def test_remove_member_revokes_access_at_once(world, api):
    assert api("alice").delete(f"{API}/conversations/{world['group']}/members/bob").status_code == 204
    assert_error(api("bob").get(f"{API}/messages/{world['group']}"), 403, "forbidden")
    assert_error(api("bob").post(f"{API}/messages", {"conversation_id": world["group"], "content": "x"}, format="json"), 403, "forbidden")


def test_anyone_removes_themself_but_only_an_owner_removes_others(world, api):
    api("alice").post(f"{API}/conversations/{world['group']}/members", {"user_ids": ["carol"]}, format="json")
    assert_error(api("bob").delete(f"{API}/conversations/{world['group']}/members/carol"), 403, "forbidden")
    assert api("bob").delete(f"{API}/conversations/{world['group']}/members/bob").status_code == 204
    assert_error(api("alice").delete(f"{API}/conversations/{world['group']}/members/nobody"), 404, "not_found")
    assert set(Member.objects.filter(conversation_id=world["group"]).values_list("user_id", flat=True)) == {"alice", "carol"}


def test_owner_who_leaves_hands_the_group_to_the_longest_standing_member(world, api):
    assert api("alice").post(f"{API}/conversations/{world['group']}/members", {"user_ids": ["carol"]}, format="json").status_code == 200
    assert api("alice").delete(f"{API}/conversations/{world['group']}/members/alice").status_code == 204
    body = api("bob").get(f"{API}/conversations/{world['group']}").json()
    assert {m["user_id"]: m["role"] for m in body["members"]} == {"bob": "owner", "carol": "member"}
    assert api("bob").delete(f"{API}/conversations/{world['group']}/members/carol").status_code == 204


# --- messages -------------------------------------------------------------------------


def test_send_message(world, api):
    r = api("bob").post(
        f"{API}/messages",
        {"conversation_id": world["group"], "type": "ai", "content": {"text": "hello", "parts": [1, 2]}, "metadata": {"model": "m"}},
        format="json",
    )
    assert r.status_code == 201, r.content
    message = r.json()["message"]
    assert set(message) == MESSAGE_KEYS
    assert (message["seq"], message["sender_id"], message["type"], message["status"]) == (2, "bob", "ai", "sent")
    assert message["content"] == {"text": "hello", "parts": [1, 2]} and message["stream"] is None


def test_send_is_idempotent_on_client_msg_id(world, api):
    body = {"conversation_id": world["group"], "content": "once", "client_msg_id": "c-1"}
    first = api("alice").post(f"{API}/messages", body, format="json")
    repeat = api("alice").post(f"{API}/messages", {**body, "content": "changed"}, format="json")
    assert (first.status_code, repeat.status_code) == (201, 200)
    assert repeat.json()["message"]["message_id"] == first.json()["message"]["message_id"]
    assert repeat.json()["message"]["seq"] == first.json()["message"]["seq"] == 2
    assert repeat.json()["message"]["content"] == "once"
    # the same client_msg_id from another sender is another message
    other = api("bob").post(f"{API}/messages", body, format="json")
    assert other.status_code == 201 and other.json()["message"]["seq"] == 3  # no seq was consumed by the repeat


def test_reply_to(world, api):
    first = Message.objects.get(conversation_id=world["group"])
    r = api("bob").post(f"{API}/messages", {"conversation_id": world["group"], "content": "re", "reply_to": first.id}, format="json")
    assert r.status_code == 201 and r.json()["message"]["reply_to"] == first.id
    foreign = Message.objects.create(tenant="other", conversation_id=world["other"], seq=1, sender_id="alice", content="x")
    body = assert_error(api("bob").post(f"{API}/messages", {"conversation_id": world["group"], "content": "re", "reply_to": foreign.id}, format="json"), 400, "invalid")
    assert "reply_to" in body["errors"]


@pytest.mark.parametrize(
    "payload, field",
    [
        ({}, "conversation_id"),
        ({"content": "x"}, "conversation_id"),
        ({"conversation_id": "C"}, "content"),
        ({"conversation_id": "C", "content": None}, "content"),
        ({"conversation_id": "C", "content": ""}, "content"),
        ({"conversation_id": "C", "content": "x", "type": "sticker"}, "type"),
        ({"conversation_id": "C", "content": "x", "metadata": "m"}, "metadata"),
        ({"conversation_id": "C", "content": "x", "client_msg_id": ""}, "client_msg_id"),
        ({"conversation_id": "C", "content": "x", "client_msg_id": 5 * "x" * 41}, "client_msg_id"),
        ({"conversation_id": ["C"], "content": "x"}, "conversation_id"),
        ({"conversation_id": "C", "content": 2**70}, "content"),
        ({"conversation_id": "C", "content": "nul\u0000byte"}, "content"),
        ({"conversation_id": "C", "content": {"deep": "x\u0000"}}, "content"),
    ],
)
def test_send_validation(world, api, payload, field):
    payload = {k: (world["group"] if v == "C" else v) for k, v in payload.items()}
    body = assert_error(api("alice").post(f"{API}/messages", payload, format="json"), 400, "invalid")
    assert field in body["errors"], body
    assert Message.objects.filter(conversation_id=world["group"]).count() == 1


def test_oversized_content_is_413(world, api, settings):
    settings.MAX_MESSAGE_BYTES = 1000
    r = api("alice").post(f"{API}/messages", {"conversation_id": world["group"], "content": "x" * 1001}, format="json")
    assert_error(r, 413, "too_large")
    r = api("alice").post(f"{API}/messages", {"conversation_id": world["group"], "content": "x" * 900, "metadata": {"m": "y" * 200}}, format="json")
    assert_error(r, 413, "too_large")
    assert api("alice").post(f"{API}/messages", {"conversation_id": world["group"], "content": "x" * 900}, format="json").status_code == 201
    assert Conversation.objects.get(pk=world["group"]).last_seq == 2  # the refused ones used no seq


def test_body_over_the_server_limit_is_413(world, api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    r = api("alice").post(f"{API}/messages", {"conversation_id": world["group"], "content": "x" * 20_000}, format="json")
    assert_error(r, 413, "too_large")


def test_create_send_and_read_history(api):
    alice = api("alice")
    r = alice.post(f"{API}/conversations", {"type": "group", "name": "g", "member_ids": ["bob"]}, format="json")
    assert r.status_code == 201, r.content
    conv_id = r.json()["conversation_id"]
    for i in range(3):
        assert alice.post(f"{API}/messages", {"conversation_id": conv_id, "content": f"m{i}"}, format="json").status_code == 201
    assert seqs(api("bob").get(f"{API}/messages/{conv_id}?after_seq=1")) == [2, 3]
    listed = api("bob").get(f"{API}/conversations").json()["conversations"][0]
    assert listed["unread_count"] == 3 and listed["last_message"]["content"] == "m2"


# --- history --------------------------------------------------------------------------


@pytest.fixture
def ten(world, send):
    """The group holds seqs 1..10."""
    group = Conversation.objects.get(pk=world["group"])
    return [Message.objects.get(conversation=group, seq=1)] + [send(group, "bob", f"m{i}") for i in range(2, 11)]


def seqs(response) -> list[int]:
    assert response.status_code == 200, response.content
    return [m["seq"] for m in response.json()["messages"]]


def test_history_paging(ten, world, api):
    c, alice = world["group"], api("alice")
    r = alice.get(f"{API}/messages/{c}?limit=3")
    assert seqs(r) == [8, 9, 10] and r.json()["has_more"] is True and r.json()["conversation_id"] == c
    assert seqs(alice.get(f"{API}/messages/{c}?limit=3&before_seq=8")) == [5, 6, 7]
    assert seqs(alice.get(f"{API}/messages/{c}?limit=3&before_id={ten[4].id}")) == [2, 3, 4]
    r = alice.get(f"{API}/messages/{c}?limit=3&before_seq=3")
    assert seqs(r) == [1, 2] and r.json()["has_more"] is False
    r = alice.get(f"{API}/messages/{c}?after_seq=0&limit=4")
    assert seqs(r) == [1, 2, 3, 4] and r.json()["has_more"] is True
    r = alice.get(f"{API}/messages/{c}?after_seq=7")
    assert seqs(r) == [8, 9, 10] and r.json()["has_more"] is False
    assert seqs(alice.get(f"{API}/messages/{c}?after_seq=10")) == []
    assert seqs(alice.get(f"{API}/messages/{c}?after_seq=2&before_seq=6")) == [3, 4, 5]
    assert seqs(alice.get(f"{API}/messages/{c}?limit=200")) == list(range(1, 11))
    assert seqs(alice.get(f"{API}/messages/{c}?limit=1")) == [10]


def test_empty_query_parameters_count_as_absent(ten, world, api):
    """docs/protocol.md writes the history URL as `?limit=50&before_id=&before_seq=&after_seq=`."""
    r = api("alice").get(f"{API}/messages/{world['group']}?limit=50&before_id=&before_seq=&after_seq=")
    assert seqs(r) == list(range(1, 11))
    assert api("alice").get(f"{API}/conversations?limit=&cursor=").status_code == 200


def test_history_status_as_seen_by_the_sender(ten, world, api):
    Member.objects.filter(conversation_id=world["group"], user_id="alice").update(delivered_seq=6, read_seq=4)
    messages = api("bob").get(f"{API}/messages/{world['group']}").json()["messages"]
    assert [m["status"] for m in messages] == ["sent"] + ["read"] * 3 + ["delivered"] * 2 + ["sent"] * 4


@pytest.mark.parametrize(
    "query",
    ["limit=0", "limit=201", "limit=-5", "limit=abc", "limit=1e3", "limit=999999999999999999999999",
     "after_seq=x", "after_seq=-1", "before_seq=1.5", "before_seq=99999999999999999999999"],
)
def test_history_bad_query(ten, world, api, query):
    body = assert_error(api("alice").get(f"{API}/messages/{world['group']}?{query}"), 400, "invalid")
    assert set(body["errors"]) <= {"limit", "after_seq", "before_seq"}


def test_history_before_an_unknown_or_foreign_message_is_404(ten, world, api):
    foreign = Message.objects.create(tenant="other", conversation_id=world["other"], seq=1, sender_id="alice", content="x")
    unknown = api("alice").get(f"{API}/messages/{world['group']}?before_id=nope")
    other = api("alice").get(f"{API}/messages/{world['group']}?before_id={foreign.id}")
    assert_error(unknown, 404, "not_found")
    assert other.json() == unknown.json()


def test_history_runs_constant_queries(world, api, send, django_assert_num_queries):
    group = Conversation.objects.get(pk=world["group"])
    client = api("alice")
    with CaptureQueriesContext(connection) as few:
        assert len(client.get(f"{API}/messages/{group.id}").json()["messages"]) == 1
    for i in range(30):
        send(group, "bob" if i % 2 else "alice", f"m{i}")
    with django_assert_num_queries(len(few.captured_queries)):
        assert len(client.get(f"{API}/messages/{group.id}").json()["messages"]) == 31
    before = Message.objects.get(conversation=group, seq=20).id
    with django_assert_num_queries(len(few.captured_queries) + 1):  # + the before_id anchor
        assert len(client.get(f"{API}/messages/{group.id}?before_id={before}").json()["messages"]) == 19


# --- bad input ------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ['{"conversation_id": ', "[1, 2]", "null", '"text"', "\xff\xfe", "{" * 5000 + "}" * 5000,
                                 '{"conversation_id": "c", "content": NaN}'])
def test_malformed_json_is_400(world, api, raw):
    r = api("alice").generic("POST", f"{API}/messages", raw.encode("utf-8", "surrogateescape"), content_type="application/json")
    assert r.status_code == 400, r.content
    assert r.json()["code"] == "invalid"


def test_deeply_nested_json_is_400_not_500(world, api):
    raw = '{"conversation_id": "%s", "content": %s}' % (world["group"], "[" * 100_000 + "]" * 100_000)
    r = api("alice").generic("POST", f"{API}/messages", raw, content_type="application/json")
    assert_error(r, 400, "invalid")


def test_unknown_fields_are_ignored(world, api):
    r = api("alice").post(f"{API}/messages", {"conversation_id": world["group"], "content": "x", "colour": "red"}, format="json")
    assert r.status_code == 201 and "colour" not in r.json()["message"]


def test_ids_with_nul_characters_are_a_clean_4xx(world, api):
    for path in ["/conversations/a%00b", "/messages/a%00b", f"/conversations/{world['group']}/members/b%00ob"]:
        for method in ("get", "delete"):
            r = getattr(api("alice"), method)(API + path)
            assert r.status_code in (400, 404, 405), (path, r.content)
            assert "code" in r.json()


def test_unknown_api_path_is_a_json_404(api, client, settings):
    settings.DEBUG = True  # the technical HTML 404 page must not leak into the API
    for c in (api("alice"), client):
        assert_error(c.get(f"{API}/nothing/here"), 404, "not_found")


def test_wrong_method_is_a_json_405(world, api):
    r = api("alice").put(f"{API}/messages", {}, format="json")
    assert r.status_code == 405 and r.json()["code"] == "method_not_allowed"


def test_other_media_types_are_a_clean_400(world, api):
    form = api("alice").post(f"{API}/messages", {"conversation_id": world["group"], "content": "form"})
    assert "content" in assert_error(form, 400, "invalid")["errors"]  # content must be JSON text
    xml = api("alice").generic("POST", f"{API}/messages", "<m/>", content_type="application/xml")
    assert_error(xml, 400, "invalid")


# --- rate limiting --------------------------------------------------------------------


def in_one_window(action):
    """Run `action` inside a single one-second rate window (retrying on a slow machine that
    crosses a boundary) and return its result."""
    for _ in range(5):
        time.sleep(1.02 - time.time() % 1.0)
        window = int(time.time())
        result = action(window)
        if int(time.time()) == window:
            return result
    pytest.fail("could not fit the requests into one rate window")


def test_rate_limit_is_per_user_and_shared_between_clients(world, api, settings):
    settings.RATE_LIMIT_PER_SEC = 3
    phone, laptop, bob = api("alice"), api("alice"), api("bob")

    def burst(window):
        answers = [c.post(f"{API}/messages", {}, format="json") for c in (phone, laptop, phone, laptop)]
        return answers, bob.post(f"{API}/messages", {}, format="json")

    answers, bob_answer = in_one_window(burst)
    assert [a.status_code for a in answers] == [400, 400, 400, 429]
    assert_error(answers[-1], 429, "rate_limited")
    assert int(answers[-1]["Retry-After"]) >= 1
    assert bob_answer.status_code == 400  # bob has his own budget
    assert phone.get(f"{API}/messages/{world['group']}").status_code == 200  # reads are not limited


def test_rate_limit_budgets_of_lookalike_ids_are_separate(api, settings):
    settings.RATE_LIMIT_PER_SEC = 1
    first, second = api("b:c", tenant="a"), api("c", tenant="a:b")
    codes = in_one_window(lambda window: [c.post(f"{API}/messages", {}, format="json").status_code for c in (first, second)])
    assert codes == [400, 400]


@pytest.mark.redis
def test_rate_limit_window_lives_in_redis(world, api, settings):
    from aiim_project.core.redis import sync_client

    settings.RATE_LIMIT_PER_SEC = 100

    def fill_from_elsewhere(window):
        api("alice").post(f"{API}/messages", {}, format="json")
        key = f"aiim:rl:7:default:alice:{window}"
        counted = int(sync_client().get(key) or 0)
        # another process sharing this Redis has used up alice's budget
        sync_client().set(key, 1000, ex=2)
        return counted, api("alice").post(f"{API}/messages", {}, format="json")

    counted, answer = in_one_window(fill_from_elsewhere)
    assert counted == 1
    assert_error(answer, 429, "rate_limited")


@pytest.mark.redis
@pytest.mark.e2e
def test_rate_limit_is_shared_by_two_server_processes(daphne, token):
    import urllib.error
    import urllib.request

    servers = daphne(2, RATE_LIMIT_PER_SEC="3")
    auth = {"Authorization": f"Bearer {token('alice')}", "Content-Type": "application/json"}

    def post(server) -> int:
        request = urllib.request.Request(f"{server.url}{API}/messages", data=b"{}", headers=auth)
        try:
            urllib.request.urlopen(request, timeout=30)
        except urllib.error.HTTPError as answer:
            return answer.code
        return 200

    codes = in_one_window(lambda window: [post(servers[i % 2]) for i in range(4)])
    assert codes == [400, 400, 400, 429]


# --- dependency outages ---------------------------------------------------------------


@pytest.fixture
def redis_down(settings):
    """Point the running process at a Redis that refuses connections (a closed port)."""
    from aiim_project.core import redis as aiim_redis
    from messaging import seq

    original = settings.REDIS_URL
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    aiim_redis.sync_client.cache_clear()
    seq.get_allocator.cache_clear()
    yield
    settings.REDIS_URL = original
    aiim_redis.sync_client.cache_clear()
    seq.get_allocator.cache_clear()


@pytest.mark.redis
def test_redis_outage_is_503_with_nothing_half_written(world, api, redis_down):
    r = api("alice").post(f"{API}/messages", {"conversation_id": world["group"], "content": "x", "client_msg_id": "k"}, format="json")
    assert_error(r, 503, "unavailable")
    assert int(r["Retry-After"]) >= 1
    assert Message.objects.filter(conversation_id=world["group"]).count() == 1
    assert Conversation.objects.get(pk=world["group"]).last_seq == 1
    # reads do not need Redis
    assert seqs(api("alice").get(f"{API}/messages/{world['group']}")) == [1]


@pytest.mark.e2e
def test_database_outage_is_503(daphne, token):
    import json
    import urllib.error
    import urllib.request

    if connection.vendor == "sqlite":
        dead = "sqlite:////nonexistent-dir/aiim/db.sqlite3"
    else:
        dead = "postgres://postgres@127.0.0.1:1/aiim"
    (server,) = daphne(DATABASE_URL=dead, DB_POOL_TIMEOUT="1")
    auth = {"Authorization": f"Bearer {token('alice')}", "Content-Type": "application/json"}
    requests = [
        urllib.request.Request(f"{server.url}{API}/conversations", headers=auth),
        urllib.request.Request(f"{server.url}{API}/messages", data=json.dumps({"conversation_id": "c", "content": "x"}).encode(), headers=auth),
    ]
    for request in requests:
        with pytest.raises(urllib.error.HTTPError) as failure:
            urllib.request.urlopen(request, timeout=30)
        assert failure.value.code == 503
        assert json.loads(failure.value.read())["code"] == "unavailable"
        assert int(failure.value.headers["Retry-After"]) >= 1


def test_cursor_is_opaque_base64(api, make_conversation):
    for i in range(3):
        make_conversation("alice", [f"x{i}"])
    cursor = api("alice").get(f"{API}/conversations?limit=1").json()["next_cursor"]
    assert cursor and base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))


# --- fuzzed input: a clean answer, never a 500 ----------------------------------------

from hypothesis import HealthCheck, given  # noqa: E402
from hypothesis import settings as hsettings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

FUZZ = hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@FUZZ
@given(content=JSON, metadata=JSON, client_msg_id=JSON, reply_to=JSON, kind=JSON)
def test_fuzzed_send_bodies_get_a_clean_answer(world, api, content, metadata, client_msg_id, reply_to, kind):
    body = {"conversation_id": world["group"], "content": content, "metadata": metadata,
            "client_msg_id": client_msg_id, "reply_to": reply_to, "type": kind}
    r = api("alice").post(f"{API}/messages", body, format="json")
    assert r.status_code in (200, 201, 400, 413), r.content
    assert r.status_code < 300 or r.json()["code"] in ("invalid", "too_large")


@FUZZ
@given(params=st.dictionaries(st.sampled_from(["limit", "after_seq", "before_seq", "before_id", "cursor"]), st.text(max_size=30)))
def test_fuzzed_query_parameters_get_a_clean_answer(world, api, params):
    for path in (f"/messages/{world['group']}", "/conversations"):
        r = api("alice").get(API + path, params)
        assert r.status_code in (200, 400, 404), r.content
        assert r.status_code == 200 or r.json()["code"] in ("invalid", "not_found")


@FUZZ
@given(when=st.datetimes(timezones=st.timezones()), conv_id=st.text(max_size=70))
def test_fuzzed_cursors_get_a_clean_answer(world, api, when, conv_id):
    cursor = base64.urlsafe_b64encode(f"{when.isoformat()}|{conv_id}".encode()).decode()
    r = api("alice").get(f"{API}/conversations", {"cursor": cursor})
    assert r.status_code in (200, 400), r.content
