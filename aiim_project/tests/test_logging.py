"""Structured logs: one JSON object per line, the request id on every line a request causes,
no tokens or message contents."""

from __future__ import annotations

import io
import json
import logging

import pytest
from django.test import Client

from aiim_project.core.logs import REDACTED, ContextFilter, JsonFormatter, conn_id_var


@pytest.fixture
def json_log():
    """Captures the root logger's output as the production handler formats it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    root.removeHandler(handler)
    root.setLevel(old_level)


@pytest.mark.django_db
def test_request_id_is_echoed_and_on_the_request_log_line(api, json_log):
    client = api("alice")
    response = client.get("/api/aiim/conversations?token=secret-in-query", HTTP_X_REQUEST_ID="trace-42")
    assert response.status_code == 200
    assert response["X-Request-ID"] == "trace-42"

    lines = [e for e in json_log() if e["logger"] == "aiim.request"]
    assert len(lines) == 1
    entry = lines[0]
    assert entry["request_id"] == "trace-42"
    assert (entry["method"], entry["path"], entry["status"]) == ("GET", "/api/aiim/conversations", 200)
    assert entry["duration_ms"] >= 0
    assert "secret-in-query" not in json.dumps(entry)


@pytest.mark.django_db
def test_unsafe_request_id_is_replaced_by_a_fresh_one():
    client = Client()
    response = client.get("/health/live", HTTP_X_REQUEST_ID="bad id\r\nX-Evil: 1")
    generated = response["X-Request-ID"]
    assert generated != "bad id\r\nX-Evil: 1" and len(generated) == 32
    assert client.get("/health/live")["X-Request-ID"] != generated


@pytest.mark.django_db
def test_error_lines_carry_the_request_id(api, json_log, make_conversation):
    # Another tenant's conversation: a 404 rendered by the REST adapter, logged by the
    # middleware with the id the caller chose.
    conversation = make_conversation("carol", ["dan"], tenant="other")
    response = api("alice").get(f"/api/aiim/conversations/{conversation.id}", HTTP_X_REQUEST_ID="r-404")
    assert response.status_code == 404
    (entry,) = [e for e in json_log() if e["logger"] == "aiim.request"]
    assert (entry["status"], entry["request_id"]) == (404, "r-404")


def test_sensitive_extra_fields_are_redacted(json_log):
    token = conn_id_var.set("c-7")
    try:
        logging.getLogger("aiim.test").info(
            "frame", extra={"token": "eyJabc", "content": "private words", "frame_type": "send_msg"}
        )
    finally:
        conn_id_var.reset(token)
    (entry,) = [e for e in json_log() if e["logger"] == "aiim.test"]
    assert entry["token"] == REDACTED and entry["content"] == REDACTED
    assert entry["frame_type"] == "send_msg"
    assert entry["conn_id"] == "c-7"
    assert "request_id" not in entry  # outside a request: no empty id field


def test_text_format_for_development_renders_context_ids():
    from django.conf import settings

    formatter = logging.Formatter(settings.LOGGING["formatters"]["text"]["format"])
    record = logging.makeLogRecord({"name": "aiim.x", "levelname": "INFO", "msg": "hello"})
    ContextFilter().filter(record)
    line = formatter.format(record)
    assert "aiim.x" in line and line.endswith("hello")


def test_requests_attached_by_django_are_logged_without_query_string(json_log, rf):
    request = rf.get("/api/aiim/conversations", {"token": "eyJsecret"})
    logging.getLogger("django.request").warning("Not Found: %s", request.path, extra={"request": request, "status_code": 404})
    (entry,) = [e for e in json_log() if e["logger"] == "django.request"]
    assert entry["request"] == "GET /api/aiim/conversations"
    assert "eyJsecret" not in json.dumps(entry)


@pytest.mark.e2e
def test_the_container_writes_one_json_line_per_request_and_no_token(transactional_db, tmp_path, token):
    from django.conf import settings

    from tests.support.container import Container
    from tests.support.http import fetch

    secret = token("alice")
    with Container(tmp_path, LOG_FORMAT="json", LOG_LEVEL="INFO", JWT_SECRET=settings.JWT_SECRET) as container:
        status, headers, _ = fetch(
            "GET",
            f"{container.url}/api/aiim/conversations?token={secret}",
            headers={"Authorization": f"Bearer {secret}", "X-Request-ID": "e2e-1"},
        )
        assert (status, headers["X-Request-ID"]) == (200, "e2e-1")
        assert fetch("GET", f"{container.url}/api/aiim/nowhere", headers={"X-Request-ID": "e2e-2"})[0] == 404

    log = container.log_path.read_text()
    assert secret not in log
    lines = [line for line in log.splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    requests = {e["request_id"]: e for e in entries if e["logger"] == "aiim.request"}
    assert (requests["e2e-1"]["status"], requests["e2e-1"]["path"]) == (200, "/api/aiim/conversations")
    assert requests["e2e-2"]["status"] == 404
