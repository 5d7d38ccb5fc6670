"""The original AIIM's entry points outside the API: the `GET /` banner and `/openapi.json`."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import Client

pytestmark = pytest.mark.django_db


def test_root_is_the_service_banner_and_every_link_answers():
    response = Client().get("/")
    assert response.status_code == 200
    body = response.json()
    assert body["name"] == "AIIM"
    assert body["version"] == settings.SPECTACULAR_SETTINGS["VERSION"]
    links = body["links"]
    assert {"health", "metrics", "openapi", "docs", "api", "websocket"} <= set(links)
    for name, href in links.items():
        if name in ("api", "websocket"):
            continue  # the API root needs a token; the WebSocket needs an upgrade
        assert Client().get(href).status_code == 200, (name, href)


def test_root_refuses_writes_and_needs_no_token():
    assert Client().post("/").status_code == 405
    assert Client().get("/", HTTP_AUTHORIZATION="Bearer forged").status_code == 200


def test_openapi_json_serves_the_schema_as_json():
    response = Client().get("/openapi.json")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/vnd.oai.openapi+json"
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    assert schema["info"]["version"] == settings.SPECTACULAR_SETTINGS["VERSION"]
    assert {"/api/aiim/messages", "/api/aiim/messages/stream", "/api/aiim/receipts/delivered"} <= set(schema["paths"])
    # A client that asks for plain JSON (FastAPI's type) gets it.
    assert Client().get("/openapi.json", HTTP_ACCEPT="application/json")["Content-Type"] == "application/json"
    same = Client().get("/api/schema", {"format": "json"}, HTTP_ACCEPT="application/json").json()
    assert schema == same
