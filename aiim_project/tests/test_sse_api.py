"""Auth and tenancy of the stream endpoints: refused before any stream starts, with the API's
JSON errors. The token comes from the bearer header or `?token=`; another tenant's ids
answer exactly like missing ones."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from aiim_project.core.auth import mint_token
from tests.support.sse import open_sse, ui_parts
from tests.support.tokens import signed_with_another_key

MISSING = {"detail": "Not found.", "code": "not_found"}


@pytest.fixture
def world(make_conversation, send):
    mine = make_conversation("alice", ("bob",))
    message = send(mine, "bob", "hello")
    theirs = make_conversation("alice", ("bob",), tenant="other")
    their_message = send(theirs, "bob", "secret", tenant="other")
    elsewhere = make_conversation("carol", ("dave",))
    return {"mine": mine, "message": message, "theirs": theirs, "their_message": their_message, "elsewhere": elsewhere}


def paths(world) -> list[str]:
    return [
        f"/api/aiim/messages/{world['mine'].id}/{world['message'].id}/stream",
        f"/api/aiim/conversations/{world['mine'].id}/events",
    ]


@pytest.mark.parametrize(
    ("how", "code"),
    [("none", "not_authenticated"), ("forged", "token_invalid"), ("expired", "token_expired"),
     ("forged-query", "token_invalid"), ("expired-query", "token_expired"), ("empty-query", "not_authenticated")],
)
def test_bad_or_missing_token_is_401(world, how, code):
    client = APIClient()
    for path in paths(world):
        query = ""
        if how == "forged":
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {signed_with_another_key()}")
        elif how == "expired":
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {mint_token(user_id='alice', ttl=-10)}")
        elif how == "forged-query":
            query = f"?token={signed_with_another_key()}"
        elif how == "expired-query":
            query = f"?token={mint_token(user_id='alice', ttl=-10)}"
        elif how == "empty-query":
            query = "?token="
        response = client.get(path + query)
        assert response.status_code == 401, (path, response.content)
        assert response.json()["code"] == code
        assert response["WWW-Authenticate"] == 'Bearer realm="aiim"'


def test_another_tenants_ids_are_404_exactly_like_missing_ones(world, api):
    alice = api("alice")
    mine, theirs = world["mine"].id, world["theirs"].id
    for path in [
        f"/api/aiim/messages/{theirs}/{world['their_message'].id}/stream",
        f"/api/aiim/messages/{mine}/{world['their_message'].id}/stream",
        f"/api/aiim/messages/nope/{world['message'].id}/stream",
        f"/api/aiim/messages/{mine}/nope/stream",
        f"/api/aiim/conversations/{theirs}/events",
        "/api/aiim/conversations/nope/events",
    ]:
        response = alice.get(path)
        assert response.status_code == 404, path
        assert response.json() == MISSING or response.json()["code"] == "not_found"
    # Exactly the same body for another tenant's conversation and a missing one.
    assert alice.get(f"/api/aiim/conversations/{theirs}/events").content == alice.get("/api/aiim/conversations/nope/events").content
    assert (
        alice.get(f"/api/aiim/messages/{theirs}/{world['their_message'].id}/stream").content
        == alice.get(f"/api/aiim/messages/nope/{world['their_message'].id}/stream").content
    )


def test_a_message_of_another_conversation_is_404(world, api, send, make_conversation):
    other = make_conversation("alice", ("erin",))
    message = send(other, "erin", "not here")
    response = api("alice").get(f"/api/aiim/messages/{world['mine'].id}/{message.id}/stream")
    assert response.status_code == 404


def test_non_member_of_the_same_tenant_is_403(world, api):
    elsewhere = world["elsewhere"]
    assert api("alice").get(f"/api/aiim/conversations/{elsewhere.id}/events").json()["code"] == "forbidden"
    assert api("alice").get(f"/api/aiim/messages/{elsewhere.id}/x/stream").status_code == 403


def test_errors_are_json_even_when_the_client_asks_for_an_event_stream(world, api):
    for path in paths(world):
        response = APIClient().get(path, HTTP_ACCEPT="text/event-stream")
        assert response.status_code == 401
        assert response["Content-Type"] == "application/json"
        assert response.json()["code"] == "not_authenticated"


@pytest.mark.e2e
def test_bearer_header_and_query_token_both_open_the_stream(daphne, world):
    server = daphne(1)[0]
    path = f"/api/aiim/messages/{world['mine'].id}/{world['message'].id}/stream"
    token = mint_token(user_id="alice")
    by_header = open_sse(server, path, headers={"Authorization": f"Bearer {token}"})
    by_query = open_sse(server, path, token=token)
    for sse in (by_header, by_query):
        assert sse.status == 200
        parts = ui_parts(sse.rest(timeout=5))
        # An ordinary text message is a stream that has ended.
        assert [p if isinstance(p, str) else p["type"] for p in parts] == [
            "start", "start-step", "text-start", "text-delta", "text-end", "finish-step", "finish", "[DONE]"]
        assert parts[3]["delta"] == "hello"
