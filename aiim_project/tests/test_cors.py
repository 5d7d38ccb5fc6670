"""CORS through the real server (the REST API's own middleware chain, aiim_project.asgi_handler):
an allowed origin gets the headers on REST, on the streams and on a preflight; any other
origin, or any origin when CORS_ALLOWED_ORIGINS is empty, gets none. And `?token=` never
reaches a log line, Daphne's access log included."""

from __future__ import annotations

import pytest

from aiim_project.core.auth import mint_token
from tests.support.http import fetch as rest
from tests.support.sse import open_sse

pytestmark = pytest.mark.e2e

ALLOWED = "http://app.example.test:3000"
OTHER = "http://evil.example.test"


def preflight(server, path: str, origin: str):
    return rest("OPTIONS", f"{server.url}{path}", headers={
        "Origin": origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"})


def test_allowed_origin_gets_cors_headers_on_rest_streams_and_preflight(daphne, make_conversation, send):
    server = daphne(1, CORS_ALLOWED_ORIGINS=ALLOWED)[0]
    conversation = make_conversation("alice", ("bob",))
    message = send(conversation, "bob", "hi")
    token = mint_token(user_id="alice")

    status, head, _ = preflight(server, "/api/aiim/messages", ALLOWED)
    assert status == 200
    assert head["access-control-allow-origin"] == ALLOWED
    assert "authorization" in head["access-control-allow-headers"]
    assert "POST" in head["access-control-allow-methods"]

    status, head, body = rest("GET", f"{server.url}/api/aiim/conversations", headers={"Origin": ALLOWED, "Authorization": f"Bearer {token}"})
    assert status == 200 and body["conversations"]
    assert head["access-control-allow-origin"] == ALLOWED

    sse = open_sse(server, f"/api/aiim/messages/{conversation.id}/{message.id}/stream", token=token, headers={"Origin": ALLOWED})
    assert sse.status == 200
    assert sse.headers["access-control-allow-origin"] == ALLOWED
    assert "x-vercel-ai-ui-message-stream" in sse.headers["access-control-expose-headers"]
    sse.close()
    events = open_sse(server, f"/api/aiim/conversations/{conversation.id}/events", token=token, headers={"Origin": ALLOWED})
    assert events.headers["access-control-allow-origin"] == ALLOWED
    events.close()

    # An error answer carries them too, or the browser could not read why it failed.
    status, head, _ = rest("GET", f"{server.url}/api/aiim/conversations", headers={"Origin": ALLOWED})
    assert status == 401 and head["access-control-allow-origin"] == ALLOWED


def test_other_origins_get_no_cors_headers(daphne, make_conversation):
    server = daphne(1, CORS_ALLOWED_ORIGINS=ALLOWED)[0]
    conversation = make_conversation("alice", ("bob",))
    token = mint_token(user_id="alice")
    _, head, _ = preflight(server, "/api/aiim/messages", OTHER)
    assert "access-control-allow-origin" not in head
    _, head, _ = rest("GET", f"{server.url}/api/aiim/conversations", headers={"Origin": OTHER, "Authorization": f"Bearer {token}"})
    assert "access-control-allow-origin" not in head
    sse = open_sse(server, f"/api/aiim/conversations/{conversation.id}/events", token=token, headers={"Origin": OTHER})
    assert sse.status == 200 and "access-control-allow-origin" not in sse.headers
    sse.close()


def test_empty_setting_is_same_origin_only(daphne):
    server = daphne(1)[0]
    _, head, _ = preflight(server, "/api/aiim/messages", ALLOWED)
    assert not any(name.lower().startswith("access-control-") for name in head)


def test_query_token_is_redacted_from_every_log_line(daphne, make_conversation, send):
    # DEBUG logging and Daphne's access log (on at the fixture's default verbosity).
    server = daphne(1, LOG_LEVEL="DEBUG")[0]
    conversation = make_conversation("alice", ("bob",))
    message = send(conversation, "bob", "hi")
    token = mint_token(user_id="alice")
    sse = open_sse(server, f"/api/aiim/messages/{conversation.id}/{message.id}/stream", token=token)
    assert sse.status == 200
    sse.rest(timeout=5)
    sse.close()
    bad = open_sse(server, f"/api/aiim/conversations/{conversation.id}/events", token=token[:-3] + "xyz")
    assert bad.status == 401
    bad.close()
    server.stop()
    log = server.log_path.read_text()
    assert "/stream?token=[redacted]" in log  # the access log line is there, redacted
    assert token not in log and token[:-3] not in log


def test_nginx_access_log_leaves_out_query_strings():
    """The production proxy (docs/deploy/nginx.conf) logs the path without its query string."""
    from pathlib import Path

    conf = (Path(__file__).resolve().parents[2] / "docs" / "deploy" / "nginx.conf").read_text()
    fmt = conf[conf.index("log_format aiim_no_query") : conf.index(";", conf.index("log_format aiim_no_query"))]
    assert "$uri" in fmt
    assert not any(v in fmt for v in ("$request ", '$request"', "$request_uri", "$args", "$query_string"))
    assert "access_log /var/log/nginx/access.log aiim_no_query;" in conf
