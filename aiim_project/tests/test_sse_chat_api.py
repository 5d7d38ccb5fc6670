"""Auth, tenancy and the errors of the chat endpoints: refused before any stream starts with
the API's JSON errors (docs/protocol.md 7.4). The streams themselves: test_sse_chat_ai_sdk.py."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from aiim_project.core.auth import mint_token
from assistants import services as assistant_services
from messaging.models import Message
from tests.support.tokens import signed_with_another_key

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(make_conversation):
    for tenant in ("default", "other"):
        assistant_services.assistant_create(
            tenant=tenant, is_admin=True, assistant_id="bot",
            data=assistant_services.AssistantInput(name="Bot", base_url="http://127.0.0.1:9/v1", model="fake-1"),
        )
    return {
        "mine": make_conversation("alice", ("bot",), type="direct"),
        "theirs": make_conversation("alice", ("bot",), type="direct", tenant="other"),
        "elsewhere": make_conversation("carol", ("bot",), type="direct"),
        "no_bot": make_conversation("alice", ("bob",)),
    }


def body(conversation_id: str, ui_id: str = "ui-1", **extra) -> dict:
    return {"id": conversation_id, "trigger": "submit-message",
            "messages": [{"id": ui_id, "role": "user", "parts": [{"type": "text", "text": "hi"}]}], **extra}


def requests(world) -> list[tuple[str, str, dict | None]]:
    mine = world["mine"].id
    return [("post", "/api/aiim/chat", body(mine)), ("get", f"/api/aiim/chat/{mine}/stream", None),
            ("post", f"/api/aiim/chat/{mine}/stop", None)]


def call(client: APIClient, method: str, path: str, data: dict | None, query: str = ""):
    return getattr(client, method)(path + query, data, format="json") if method == "post" else client.get(path + query)


@pytest.mark.parametrize(
    ("how", "code"),
    [("none", "not_authenticated"), ("forged", "token_invalid"), ("expired", "token_expired")],
)
def test_bad_or_missing_token_is_401(world, how, code):
    client = APIClient()
    if how == "forged":
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {signed_with_another_key()}")
    elif how == "expired":
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {mint_token(user_id='alice', ttl=-10)}")
    for method, path, data in requests(world):
        response = call(client, method, path, data)
        assert response.status_code == 401, (path, response.content)
        assert response.json()["code"] == code
    assert not Message.objects.exists()


def test_the_resume_stream_takes_a_query_token_and_the_posts_do_not(world):
    mine = world["mine"].id
    client = APIClient()
    assert client.get(f"/api/aiim/chat/{mine}/stream?token={mint_token(user_id='alice')}").status_code == 204
    assert client.get(f"/api/aiim/chat/{mine}/stream?token={signed_with_another_key()}").json()["code"] == "token_invalid"
    assert client.get(f"/api/aiim/chat/{mine}/stream?token={mint_token(user_id='alice', ttl=-10)}").json()["code"] == "token_expired"
    response = client.post(f"/api/aiim/chat?token={mint_token(user_id='alice')}", body(mine), format="json")
    assert response.status_code == 401


def test_another_tenants_conversation_is_404_exactly_like_a_missing_one(world, api):
    alice = api("alice")
    theirs = world["theirs"].id
    for method, path, data in requests(world):
        for conversation_id in (theirs, "nope"):
            response = call(alice, method, path.replace(world["mine"].id, conversation_id),
                            body(conversation_id) if data else None)
            assert response.status_code == 404, (path, response.content)
            assert response.json()["code"] == "not_found"
    assert (alice.post("/api/aiim/chat", body(theirs), format="json").content
            == alice.post("/api/aiim/chat", body("nope"), format="json").content)
    assert not Message.objects.exists()


def test_a_non_member_of_the_same_tenant_gets_the_missing_conversations_404(world, api):
    """The chat contract: a conversation the caller is not a member of is not found, with the
    same body as one that does not exist (docs/protocol.md section 7.4)."""
    elsewhere = world["elsewhere"].id
    alice = api("alice")
    missing = alice.post("/api/aiim/chat", body("nope"), format="json")
    refused = alice.post("/api/aiim/chat", body(elsewhere), format="json")
    assert refused.status_code == 404 and refused.content == missing.content
    assert alice.get(f"/api/aiim/chat/{elsewhere}/stream").status_code == 404
    assert alice.post(f"/api/aiim/chat/{elsewhere}/stop").status_code == 404


def test_no_assistant_is_409_no_assistant_and_nothing_is_stored(world, api):
    response = api("alice").post("/api/aiim/chat", body(world["no_bot"].id), format="json")
    assert response.status_code == 409 and response.json()["code"] == "no_assistant"
    assert not Message.objects.exists()


def test_stop_with_no_active_run_is_409_no_active_run(world, api):
    response = api("alice").post(f"/api/aiim/chat/{world['mine'].id}/stop")
    assert response.status_code == 409 and response.json()["code"] == "no_active_run"


def test_resume_with_no_active_run_is_204(world, api):
    response = api("alice").get(f"/api/aiim/chat/{world['mine'].id}/stream")
    assert response.status_code == 204 and response.content == b""


@pytest.mark.parametrize(
    "bad",
    [{"id": 5}, {"trigger": "other"}, {"messages": "x"}, {"messages": []},
     {"messages": [{"id": "u", "role": "user", "parts": [{"type": "file", "url": "x"}]}]},
     {"messages": [{"role": "user", "parts": [{"type": "text", "text": "hi"}]}]}],
)
def test_a_malformed_body_is_400_invalid(world, api, bad):
    response = api("alice").post("/api/aiim/chat", {**body(world["mine"].id), **bad}, format="json")
    assert response.status_code == 400 and response.json()["code"] == "invalid", response.content
    assert not Message.objects.exists()
