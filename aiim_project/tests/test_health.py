"""GET /health and /health/live, in-process and against real Daphne processes whose Redis or
database is down or hung."""

from __future__ import annotations

import socket

import pytest
from django.conf import settings
from django.test import Client

from tests.support.http import fetch
from tests.support.ports import free_port
from tests.support.redis_server import RedisServer


@pytest.mark.django_db
def test_live_answers_without_token_or_dependency_checks():
    response = Client().get("/health/live", HTTP_AUTHORIZATION="Bearer forged")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_health_reports_each_dependency_ok():
    response = Client().get("/health", HTTP_AUTHORIZATION="Bearer forged")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    deps = body["dependencies"]
    assert deps["database"]["status"] == "ok"
    assert deps["channel_layer"]["status"] == "ok"
    assert deps["redis"]["status"] == ("ok" if settings.REDIS_URL else "not_configured")
    assert deps["redis_ok"] is bool(settings.REDIS_URL)  # the original's boolean, beside the object


@pytest.mark.django_db
def test_health_is_not_rate_limited(settings):
    settings.RATE_LIMIT_PER_SEC = 1
    client = Client()
    assert [client.get("/health").status_code for _ in range(4)] == [200] * 4


@pytest.mark.django_db
def test_health_refuses_writes():
    assert Client().post("/health").status_code == 405


@pytest.mark.e2e
def test_health_names_redis_when_down_and_recovers(daphne, tmp_path):
    redis = RedisServer(tmp_path, start=False)
    (server,) = daphne(REDIS_URL=redis.url, CHANNEL_LAYER_PREFIX="h5health")

    status, headers, body = fetch("GET", f"{server.url}/health")
    assert status == 503
    assert body["status"] == "degraded"
    assert "redis" in body["down"]
    assert body["dependencies"]["redis"]["status"] == "down"
    assert body["dependencies"]["redis_ok"] is False
    assert body["dependencies"]["database"]["status"] == "ok"
    assert int(headers["Retry-After"]) > 0
    assert fetch("GET", f"{server.url}/health/live")[0] == 200

    redis.start()
    try:
        status, _, body = fetch("GET", f"{server.url}/health")
        assert (status, body["status"]) == (200, "ok"), body
        assert body["dependencies"]["redis"]["status"] == "ok"
        assert body["dependencies"]["redis_ok"] is True
        assert body["dependencies"]["channel_layer"]["status"] == "ok"
    finally:
        redis.stop()


@pytest.mark.e2e
def test_health_answers_when_redis_hangs(daphne):
    # Accepts connections (the kernel completes the handshake) but never answers a command.
    with socket.socket() as black_hole:
        black_hole.bind(("127.0.0.1", 0))
        black_hole.listen(64)
        port = black_hole.getsockname()[1]
        (server,) = daphne(REDIS_URL=f"redis://127.0.0.1:{port}/0", CHANNEL_LAYER_PREFIX="h5hang", HEALTH_CHECK_TIMEOUT="0.5")

        status, _, body = fetch("GET", f"{server.url}/health", timeout=30)
        assert status == 503
        assert body["dependencies"]["redis"] == {"status": "down", "error": "no answer within 0.5s"}


@pytest.mark.e2e
def test_health_names_the_database_when_down(daphne):
    closed = free_port()
    (server,) = daphne(DATABASE_URL=f"postgres://postgres@127.0.0.1:{closed}/aiim", DB_POOL_TIMEOUT="0.5")

    status, _, body = fetch("GET", f"{server.url}/health", timeout=30)
    assert status == 503
    assert "database" in body["down"]
    assert body["dependencies"]["database"]["status"] == "down"
    assert fetch("GET", f"{server.url}/health/live")[0] == 200
