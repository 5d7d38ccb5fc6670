"""The OpenAPI document: valid OpenAPI 3, public, names every endpoint of docs/protocol.md
section 2 that the URLconf serves, with the bearer scheme and the shared error body."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import Resolver404, resolve
from openapi_spec_validator import validate

from aiim_project.errors import json_404

# docs/protocol.md section 2, with sample ids to resolve against the URLconf.
PROTOCOL_ENDPOINTS = [
    ("post", "/api/aiim/conversations", "/api/aiim/conversations"),
    ("get", "/api/aiim/conversations", "/api/aiim/conversations"),
    ("get", "/api/aiim/conversations/{conversation_id}", "/api/aiim/conversations/c1"),
    ("post", "/api/aiim/conversations/{conversation_id}/members", "/api/aiim/conversations/c1/members"),
    ("delete", "/api/aiim/conversations/{conversation_id}/members/{user_id}", "/api/aiim/conversations/c1/members/u1"),
    ("post", "/api/aiim/messages", "/api/aiim/messages"),
    ("get", "/api/aiim/messages/{conversation_id}", "/api/aiim/messages/c1"),
    ("post", "/api/aiim/messages/stream", "/api/aiim/messages/stream"),
    ("post", "/api/aiim/receipts/delivered", "/api/aiim/receipts/delivered"),
    ("post", "/api/aiim/receipts/read", "/api/aiim/receipts/read"),
    ("get", "/api/aiim/receipts/{conversation_id}/{message_id}", "/api/aiim/receipts/c1/m1"),
    ("get", "/api/aiim/presence", "/api/aiim/presence"),
]
# The foundation's endpoints are always there; the others are asserted when routed.
ALWAYS = {p for _, p, _ in PROTOCOL_ENDPOINTS[:7]}


def routed(sample: str) -> bool:
    try:
        return resolve(sample).func is not json_404
    except Resolver404:
        return False


@pytest.fixture(scope="module")
def schema(django_db_blocker):
    with django_db_blocker.unblock():
        response = Client().get("/api/schema", {"format": "json"}, HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    return response.json()


def test_schema_is_valid_openapi_3(schema):
    assert schema["openapi"].startswith("3.")
    validate(schema)


@pytest.mark.parametrize(("method", "path", "sample"), PROTOCOL_ENDPOINTS)
def test_schema_names_every_protocol_endpoint_that_is_routed(schema, method, path, sample):
    if not routed(sample):
        assert path not in ALWAYS, f"{path} is not routed"
        pytest.skip(f"{path} is not in the URLconf yet")
    assert method in schema["paths"].get(path, {}), f"{method.upper()} {path} missing from the schema"


def test_operations_use_the_bearer_scheme_and_document_errors(schema):
    scheme = schema["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"], scheme["bearerFormat"]) == ("http", "bearer", "JWT")
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            assert {"bearerAuth": []} in operation["security"], (method, path)
            for status in ("401", "404", "429", "503"):
                assert status in operation["responses"], (method, path, status)
    assert schema["paths"]["/api/aiim/messages"]["post"]["responses"]["429"]["headers"]["Retry-After"]


def test_success_shapes_are_documented(schema):
    components = schema["components"]["schemas"]
    send = schema["paths"]["/api/aiim/messages"]["post"]
    assert send["responses"]["201"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/MessageEnvelopeOut"}
    assert set(components["MessageOut"]["properties"]) >= {"message_id", "seq", "status", "stream", "client_msg_id"}
    assert set(components["ConversationOut"]["properties"]) >= {"members", "last_message", "unread_count", "last_seq"}
    assert "MessageSendIn" in components


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/docs", "/redoc"])
def test_docs_pages_are_public(url):
    response = Client().get(url)
    assert response.status_code == 200
    page = response.content.decode()
    if url == "/docs":
        # Swagger UI's script has a URL of its own (no inline script under the docs' CSP).
        assert '<script src="/docs?script="></script>' in page
        page = Client().get("/docs?script=").content.decode()
    assert "/api/schema" in page


@pytest.mark.django_db
def test_browsable_api_works_with_a_token(token, make_conversation):
    make_conversation("alice", ["bob"], name="browsable")
    response = Client().get("/api/aiim/conversations", HTTP_AUTHORIZATION=f"Bearer {token('alice')}", HTTP_ACCEPT="text/html")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert "browsable" in response.content.decode()


def test_schema_generates_without_warnings(tmp_path):
    # A view whose shapes drf-spectacular cannot see (or an ambiguous enum or operation id)
    # is a warning; --fail-on-warn turns it into a failure here rather than a vague schema.
    call_command("spectacular", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))
    assert "PresenceOut" in (tmp_path / "schema.yaml").read_text()
