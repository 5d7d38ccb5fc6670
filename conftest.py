"""Shared fixtures. The backend comes from the environment: embedded (SQLite, in-memory
channel layer) by default, Postgres + Redis when DATABASE_URL and REDIS_URL are set."""

from __future__ import annotations

import os

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from aiim_project.auth import mint_token

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_collection_modifyitems(config, items):
    if settings.REDIS_URL:
        return
    skip = pytest.mark.skip(reason="needs the Postgres + Redis backend (REDIS_URL unset: embedded pass)")
    for item in items:
        if "redis" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _clean_redis():
    """Redis state (seq counters, rate windows, presence) does not roll back with the test
    database: start every test from an empty Redis database."""
    if not settings.REDIS_URL:
        yield
        return
    from messaging.redis import sync_client

    try:
        sync_client().flushdb()
    except Exception:
        if CI:
            raise
        pytest.fail("REDIS_URL is set but Redis is unreachable")
    yield


@pytest.fixture(autouse=True)
def _no_rate_limit_by_default(settings):
    """Tests opt in to rate limiting explicitly (see the rate-limit tests)."""
    settings.RATE_LIMIT_PER_SEC = 0


@pytest.fixture
def token():
    def make(user_id: str = "alice", tenant: str = "default", ttl: int | None = 3600) -> str:
        return mint_token(user_id=user_id, tenant=tenant, ttl=ttl)

    return make


@pytest.fixture
def api(token):
    """api("alice") -> an APIClient authenticated as alice of tenant "default"."""

    def make(user_id: str = "alice", tenant: str = "default") -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token(user_id, tenant)}")
        return client

    return make


@pytest.fixture
def make_conversation(db):
    from messaging import services

    def make(creator: str = "alice", others=("bob",), type: str = "group", tenant: str = "default", **kw):
        conversation, _ = services.conversation_create(
            tenant=tenant, creator=creator, type=type, member_ids=list(others), **kw
        )
        return conversation

    return make


@pytest.fixture
def send(db):
    from messaging import services

    def do(conversation, sender: str = "alice", content="hi", tenant: str = "default", **kw):
        message, _ = services.message_send(
            tenant=tenant, sender=sender, conversation_id=conversation.id, content=content, **kw
        )
        return message

    return do
