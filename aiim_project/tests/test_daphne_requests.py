"""Daphne's HTTP requests reach the application with their form bodies unparsed
(aiim_project.compat.daphne), against a real Daphne: a form or malformed multipart body
gets the API's JSON error, not Twisted's bare 400."""

from __future__ import annotations

import inspect
import json
import urllib.error
import urllib.request

import pytest
from twisted.web import http

pytestmark = pytest.mark.e2e


def post(url: str, body: bytes, content_type: str, token: str) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": content_type, "Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_twisted_still_has_the_switch_this_relies_on():
    assert "parsePOSTFormSubmission" in inspect.signature(http.Request.__init__).parameters


@pytest.mark.parametrize(
    "content_type, body",
    [
        ("multipart/form-data; boundary=xyz", b"--xyz\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nno closing boundary"),
        ("multipart/form-data", b"no boundary parameter at all"),
        ("application/x-www-form-urlencoded", b"conversation_id=x&content=hi"),
    ],
)
def test_form_bodies_get_the_api_s_json_error(daphne, token, content_type, body):
    server = daphne(1)[0]
    status, raw = post(f"{server.url}/api/aiim/messages", body, content_type, token("alice"))
    assert status in (400, 415), (status, raw)
    error = json.loads(raw)
    assert isinstance(error["code"], str) and isinstance(error["detail"], str)


def test_a_json_post_is_served_as_before(daphne, token, make_conversation):
    conversation = make_conversation("alice", others=("bob",))
    server = daphne(1)[0]
    body = json.dumps({"conversation_id": conversation.id, "content": {"text": "hi"}}).encode()
    status, raw = post(f"{server.url}/api/aiim/messages", body, "application/json", token("alice"))
    assert status == 201, raw
    assert json.loads(raw)["message"]["content"] == {"text": "hi"}
