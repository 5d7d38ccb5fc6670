"""The original AIIM's request metrics: `http_requests_total{method,path,status}` and
`http_request_duration_seconds{method,path}`, with route templates as `path`, counted on
both request chains (the REST API's one-hop handler and Django's own)."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import Client
from prometheus_client import REGISTRY

from aiim_project.core.auth import mint_token
from aiim_project.http_metrics import UNMATCHED, route_template
from tests.support.http import fetch
from tests.support.metrics import sample, scrape

MIDDLEWARE = "aiim_project.http_metrics.HttpMetricsMiddleware"


@pytest.mark.parametrize(
    "route, template",
    [
        ("api/aiim/conversations/?$", "/api/aiim/conversations"),
        ("api/aiim/conversations/(?P<conversation_id>[^/]+)/members/(?P<user_id>[^/]+)/?$",
         "/api/aiim/conversations/{conversation_id}/members/{user_id}"),
        ("api/aiim/messages/(?P<conversation_id>(?!stream/?$)[^/]+)/?$", "/api/aiim/messages/{conversation_id}"),
        ("admin/messaging/message/<path:object_id>/change/", "/admin/messaging/message/{object_id}/change"),
        ("health", "/health"),
        ("", "/"),
    ],
)
def test_route_template(route, template):
    assert route_template(route) == template


def test_both_request_chains_have_it():
    assert MIDDLEWARE in settings.MIDDLEWARE and MIDDLEWARE in settings.API_MIDDLEWARE


def count(method: str, path: str, status: str) -> float:
    return REGISTRY.get_sample_value("http_requests_total", {"method": method, "path": path, "status": status}) or 0.0


@pytest.mark.django_db
def test_requests_are_counted_by_template_not_raw_path():
    before = count("GET", "/api/aiim/conversations/{conversation_id}", "401")
    before_unmatched = count("GET", UNMATCHED, "404")
    client = Client()
    for raw in ("abc", "def", "ghi"):
        assert client.get(f"/api/aiim/conversations/{raw}").status_code == 401
    assert client.get("/api/aiim/no/such/thing").status_code == 404
    assert client.get("/nowhere-at-all").status_code == 404
    assert count("GET", "/api/aiim/conversations/{conversation_id}", "401") == before + 3
    assert count("GET", UNMATCHED, "404") == before_unmatched + 2
    assert REGISTRY.get_sample_value(
        "http_request_duration_seconds_count", {"method": "GET", "path": "/api/aiim/conversations/{conversation_id}"}
    ) >= 3


@pytest.mark.e2e
def test_daphne_counts_the_api_and_the_rest(daphne, make_conversation):
    server = daphne(1)[0]
    conversation = make_conversation("alice", ["bob"])
    auth = {"Authorization": f"Bearer {mint_token(user_id='alice')}"}
    assert fetch("GET", f"{server.url}/health")[0] == 200  # Django's own chain
    assert fetch("GET", f"{server.url}/api/aiim/messages/{conversation.id}", headers=auth)[0] == 200  # one-hop chain
    assert fetch("POST", f"{server.url}/api/aiim/messages", {"conversation_id": conversation.id, "content": "m"}, auth)[0] == 201
    assert fetch("GET", f"{server.url}/api/aiim/nope/{conversation.id}", headers=auth)[0] == 404

    text = scrape(server)
    assert sample(text, "http_requests_total", method="GET", path="/health", status="200") == 1
    assert sample(text, "http_requests_total", method="GET", path="/api/aiim/messages/{conversation_id}", status="200") == 1
    assert sample(text, "http_requests_total", method="POST", path="/api/aiim/messages", status="201") == 1
    assert sample(text, "http_requests_total", method="GET", path=UNMATCHED, status="404") == 1
    assert sample(text, "http_request_duration_seconds_count", method="POST", path="/api/aiim/messages") == 1
    # Never a raw id in a label.
    assert conversation.id not in text


@pytest.mark.django_db
def test_an_unknown_method_is_one_label_value():
    before = count("other", "/health", "405")
    for method in ("FOO", "BAR", "X-RANDOM"):
        assert Client().generic(method, "/health").status_code == 405
    assert count("other", "/health", "405") == before + 3
    assert count("FOO", "/health", "405") == 0
