"""Tenant isolation, swept over every endpoint and every frame: a token of tenant B used on
tenant A's ids answers exactly like an id that does not exist (same status, same body),
while tenant A's own member gets a real answer to the same request (the control).

The attacker is "alice" of tenant B: the same user id as a member of tenant A's
conversation, so only the tenant claim keeps them apart."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from messaging.models import Message
from tests.support.http import ahttp
from tests.support.websocket import ws_open, ws_recv, ws_request

VICTIM, ATTACKER = "A", "B"


@pytest.fixture
def world(make_conversation, send):
    """Tenant A's conversation with a message; tenant B's own conversation with one."""
    conv = make_conversation("alice", others=("bob",), tenant=VICTIM)
    msg = send(conv, "alice", "secret", tenant=VICTIM)
    own = make_conversation("alice", others=("bob",), tenant=ATTACKER)
    own_msg = send(own, "alice", "mine", tenant=ATTACKER)
    return conv, msg, own, own_msg


def rest_cases(conv_id: str, msg_id: str, own_id: str):
    """(name, method, path, body) of every endpoint taking an id, for the given ids."""
    return [
        ("conversation", "get", f"/api/aiim/conversations/{conv_id}", None),
        ("add-member", "post", f"/api/aiim/conversations/{conv_id}/members", {"user_ids": ["carol"]}),
        ("remove-member", "delete", f"/api/aiim/conversations/{conv_id}/members/bob", None),
        ("send", "post", "/api/aiim/messages", {"conversation_id": conv_id, "content": "x"}),
        ("history", "get", f"/api/aiim/messages/{conv_id}", None),
        ("history-before-foreign-message", "get", f"/api/aiim/messages/{own_id}?before_id={msg_id}", None),
        ("reply-to-foreign-message", "post", "/api/aiim/messages", {"conversation_id": own_id, "content": "x", "reply_to": msg_id}),
        ("stream", "post", "/api/aiim/messages/stream", {"conversation_id": conv_id, "chunk": "x", "client_msg_id": "s1"}),
        ("delivered", "post", "/api/aiim/receipts/delivered", {"conversation_id": conv_id, "up_to_seq": 1}),
        ("delivered-foreign-message", "post", "/api/aiim/receipts/delivered", {"conversation_id": own_id, "message_id": msg_id}),
        ("read", "post", "/api/aiim/receipts/read", {"conversation_id": conv_id, "last_read_seq": 1}),
        ("read-foreign-message", "post", "/api/aiim/receipts/read", {"conversation_id": own_id, "last_read_message_id": msg_id}),
        ("receipts", "get", f"/api/aiim/receipts/{conv_id}/{msg_id}", None),
        ("receipts-foreign-message", "get", f"/api/aiim/receipts/{own_id}/{msg_id}", None),
    ]


def call(client, method, path, body):
    return getattr(client, method)(path, body, format="json") if body is not None else getattr(client, method)(path)


@pytest.mark.django_db(transaction=True)
def test_every_endpoint_answers_another_tenants_ids_like_missing_ones(api, world):
    conv, msg, own, _ = world
    attacker, owner = api("alice", ATTACKER), api("alice", VICTIM)
    missing_conv, missing_msg = uuid.uuid4().hex, uuid.uuid4().hex
    foreign = rest_cases(conv.id, msg.id, own.id)
    missing = rest_cases(missing_conv, missing_msg, own.id)
    for (name, method, path, body), (_, _, missing_path, missing_body) in zip(foreign, missing):
        got = call(attacker, method, path, body)
        expected = call(attacker, method, missing_path, missing_body)
        assert got.status_code in (400, 404), (name, got.status_code, got.content)
        assert (got.status_code, got.json()) == (expected.status_code, expected.json()), name
    # Nothing the attacker did reached tenant A.
    assert list(Message.objects.filter(conversation=conv).values_list("content", flat=True)) == ["secret"]
    listed = attacker.get("/api/aiim/conversations").json()["conversations"]
    assert [c["conversation_id"] for c in listed] == [own.id]
    # The control: tenant A's alice gets real answers on her own ids (the cases that name
    # a foreign message against the attacker's own conversation have no control).
    for name, method, path, body in rest_cases(conv.id, msg.id, conv.id):
        if "foreign" in name or name == "remove-member":
            continue
        response = call(owner, method, path, body)
        assert response.status_code < 300, (name, response.status_code, response.content)


@pytest.mark.django_db(transaction=True)
def test_tenant_id_in_a_body_is_never_trusted(api, world):
    conv, _, own, _ = world
    attacker = api("alice", ATTACKER)
    for path, body in [
        ("/api/aiim/messages", {"conversation_id": own.id, "content": "x", "tenant_id": VICTIM}),
        ("/api/aiim/conversations", {"type": "group", "member_ids": ["bob"], "tenant_id": VICTIM}),
        ("/api/aiim/messages/stream", {"conversation_id": own.id, "chunk": "x", "client_msg_id": "t", "tenant_id": VICTIM}),
    ]:
        response = attacker.post(path, body, format="json")
        assert (response.status_code, response.json()["code"]) == (403, "tenant_mismatch"), (path, response.content)


WS_FRAMES = [
    {"type": "subscribe"},
    {"type": "unsubscribe"},
    {"type": "send_msg", "content": "x"},
    {"type": "stream_chunk", "chunk": "x", "client_msg_id": "s1"},
    {"type": "stream_abort", "client_msg_id": "s1"},
    {"type": "delivered", "up_to_seq": 1},
    {"type": "read", "last_read_seq": 1},
    {"type": "typing", "state": "typing"},
]


@pytest.mark.e2e
def test_every_frame_answers_another_tenants_ids_like_missing_ones(daphne, world, token):
    conv, msg, _, _ = world
    server = daphne(1)[0]

    async def scenario():
        attacker = await ws_open(server.ws_url, token("alice", ATTACKER))
        owner = await ws_open(server.ws_url, token("alice", VICTIM))
        bob = await ws_open(server.ws_url, token("bob", VICTIM))
        assert (await ws_request(bob, {"type": "subscribe", "conversation_id": conv.id}))["type"] == "subscribed"
        results = []
        for frame in WS_FRAMES:
            got = await ws_request(attacker, {**frame, "conversation_id": conv.id})
            expected = await ws_request(attacker, {**frame, "conversation_id": uuid.uuid4().hex})
            control = await ws_request(owner, {**frame, "conversation_id": conv.id}) if frame["type"] != "typing" else None
            results.append((frame["type"], got, expected, control))
        # Message ids of tenant A named in the attacker's frames.
        for frame in ({"type": "delivered", "message_id": msg.id}, {"type": "read", "message_id": msg.id}):
            got = await ws_request(attacker, {**frame, "conversation_id": conv.id})
            expected = await ws_request(attacker, {**frame, "conversation_id": uuid.uuid4().hex})
            results.append((frame["type"] + "-message-id", got, expected, None))
        # Bob (tenant A) never heard the attacker's typing (the owner sent none); the
        # message count below covers the attacker's sends and streams.
        leaked = []
        while True:
            try:
                frame = await ws_recv(bob, 1.0)
            except TimeoutError:
                break
            data = frame.get("data", {})
            if data.get("user_id") == "alice" and data.get("event") == "typing":
                leaked.append(frame)
        for ws in (attacker, owner, bob):
            await ws.close()
        return results, leaked

    results, leaked = asyncio.run(scenario())
    for kind, got, expected, control in results:
        strip = lambda f: {k: v for k, v in f.items() if k not in ("req_id", "conversation_id")}  # noqa: E731
        if kind == "unsubscribe":  # idempotent (as in the original AIIM): the same answer for any id
            assert got["type"] == "unsubscribed", (kind, got)
        else:
            assert got["type"] == "error" and got["code"] == "not_found", (kind, got)
        assert strip(got) == strip(expected), (kind, got, expected)
        if control is not None:
            assert control["type"] != "error" or control["code"] not in ("not_found", "forbidden"), (kind, control)
    assert not leaked
    # "secret", then the owner's send_msg and stream_chunk (the controls): nothing of the attacker's.
    assert Message.objects.filter(conversation=conv).count() == 3


@pytest.mark.e2e
def test_a_member_removed_while_connected_loses_access_at_once(daphne, make_conversation, api, token):
    conv = make_conversation("alice", others=("bob", "carol"))
    server = daphne(1)[0]

    async def scenario():
        bob = await ws_open(server.ws_url, token("bob"))
        assert (await ws_request(bob, {"type": "subscribe", "conversation_id": conv.id}))["type"] == "subscribed"
        # Over HTTP to the same server: its channel layer carries the membership event.
        removed = await ahttp(server.url, "DELETE", f"/api/aiim/conversations/{conv.id}/members/bob", token("alice"))
        assert removed.status == 204
        sent = await ahttp(server.url, "POST", "/api/aiim/messages", token("alice"), {"conversation_id": conv.id, "content": "after"})
        assert sent.status == 201
        frames = []
        while True:
            try:
                frames.append(await ws_recv(bob, 1.5))
            except TimeoutError:
                break
        answers = [
            await ws_request(bob, {"type": t, "conversation_id": conv.id, **extra})
            for t, extra in [("send_msg", {"content": "x"}), ("subscribe", {}), ("read", {"last_read_seq": 1}), ("typing", {"state": "typing"})]
        ]
        await bob.close()
        return frames, answers

    frames, answers = asyncio.run(scenario())
    # Told at once (member.left, or a forbidden error if a database read noticed first) ...
    assert any(
        f.get("data", {}).get("event") == "member.left" and f["data"]["user_id"] == "bob"
        or (f.get("type") == "error" and f.get("code") == "forbidden")
        for f in frames
    ), frames
    # ... and nothing of the conversation after the removal.
    assert not [f for f in frames if f.get("data", {}).get("event") == "message.created"], frames
    for answer in answers:
        assert answer["type"] == "error" and answer["code"] in ("forbidden", "not_found"), answer
    assert api("bob").get(f"/api/aiim/messages/{conv.id}").status_code in (403, 404)
