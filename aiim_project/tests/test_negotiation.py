"""A JSON body without Content-Type is parsed (the original AIIM did); a body that names
another type is still refused, and a malformed untyped body gets the usual 400."""

from __future__ import annotations

import http.client
import json

import pytest

from aiim_project.core.auth import mint_token


def untyped(client, path: str, raw: str):
    # What a server makes of a request without the header: no type (the e2e test below
    # sends one over a real socket).
    return client.generic("POST", path, raw, content_type="")


def test_send_without_content_type_is_read_as_json(api, make_conversation):
    conv = make_conversation("alice", ("bob",))
    response = untyped(api("alice"), "/api/aiim/messages", json.dumps({"conversation_id": conv.id, "content": "untyped"}))
    assert response.status_code == 201, response.content
    assert response.json()["message"]["content"] == "untyped"


def test_create_conversation_and_receipt_without_content_type(api, make_conversation, send):
    created = untyped(api("alice"), "/api/aiim/conversations", '{"type": "group", "member_ids": ["bob"]}')
    assert created.status_code == 201, created.content
    conv = make_conversation("alice", ("bob",))
    message = send(conv, sender="alice")
    receipt = untyped(api("bob"), "/api/aiim/receipts/delivered", json.dumps({"conversation_id": conv.id, "message_id": message.id}))
    assert receipt.status_code == 204, receipt.content


def test_malformed_untyped_body_is_the_usual_400(api, make_conversation):
    response = untyped(api("alice"), "/api/aiim/messages", "{not json")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    assert response.json()["detail"].startswith("Malformed request body")


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml"])
def test_a_named_unsupported_type_is_still_refused(api, make_conversation, content_type):
    conv = make_conversation("alice", ("bob",))
    body = json.dumps({"conversation_id": conv.id, "content": "x"})
    response = api("alice").generic("POST", "/api/aiim/messages", body, content_type=content_type)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid"


@pytest.mark.e2e
def test_untyped_body_over_a_real_socket(daphne, make_conversation):
    server = daphne(1)[0]
    conv = make_conversation("alice", ("bob",))
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    body = json.dumps({"conversation_id": conv.id, "content": "raw socket"})
    # http.client adds Content-Length only: no Content-Type goes out.
    connection.request("POST", "/api/aiim/messages", body, {"Authorization": f"Bearer {mint_token(user_id='alice')}"})
    response = connection.getresponse()
    payload = json.loads(response.read())
    assert response.status == 201, payload
    assert payload["message"]["content"] == "raw socket"
