"""Shared fixtures. The backend comes from the environment: embedded (SQLite, in-memory
channel layer) by default, Postgres + Redis when DATABASE_URL and REDIS_URL are set."""

from __future__ import annotations

import asyncio
import os

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connections
from rest_framework.test import APIClient

from aiim_project.core.auth import mint_token
from tests.support.daphne import DaphneProcess, daphne_env
from tests.support.ports import free_port

# Shared fixtures for every test module: the browser (chromium, tab, dev_server, prod_server),
# a DevTools tab (devtools_page_url), Node with the AI SDK (node), the fake model (fake), a
# redis-server of the test's own (redis_server).
pytest_plugins = ["tests.support.browser", "tests.support.devtools", "tests.support.node", "tests.support.fake_model", "tests.support.redis_server"]

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_collection_modifyitems(config, items):
    if settings.REDIS_URL:
        return
    skip = pytest.mark.skip(reason="needs the Postgres + Redis backend (REDIS_URL unset: embedded pass)")
    for item in items:
        if "redis" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _close_async_orm_connection(django_db_setup):
    """The async ORM calls of the async tests (`aget`, ...) run on asgiref's one shared
    thread, whose connection nothing closes: close it before pytest-django drops the test
    database, which PostgreSQL refuses while a session is open ("being accessed by other users")."""
    yield
    asyncio.run(sync_to_async(connections.close_all)())


@pytest.fixture(autouse=True)
def _clean_redis():
    """Redis state (seq counters, rate windows, presence) does not roll back with the test
    database: start every test from an empty Redis database."""
    if not settings.REDIS_URL:
        yield
        return
    from aiim_project.core.redis import sync_client

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


@pytest.fixture(autouse=True)
def _no_inline_assistant_runner(settings):
    """In-process ASGI tests do not start the assistants runner; its tests start one."""
    settings.ASSISTANT_RUNNER = "worker"


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


# --- real Daphne processes for end-to-end tests ---------------------------------------

@pytest.fixture
def daphne(transactional_db, tmp_path):
    """daphne(n=1, **env) -> [DaphneProcess]: real servers on free ports sharing this
    test's database (and Redis, on the Postgres + Redis pass)."""
    started: list[DaphneProcess] = []

    def start(n: int = 1, **extra_env: str) -> list[DaphneProcess]:
        env = daphne_env(**extra_env)
        procs = []
        for _ in range(n):
            port = free_port()
            p = DaphneProcess(port, env, tmp_path / f"daphne-{port}.log")
            started.append(p)
            procs.append(p)
        for p in procs:
            p.wait_ready()
        return procs

    yield start
    for p in started:
        p.stop()


@pytest.fixture
def in_threads():
    """in_threads(writer, n): writer(0..n-1) on n threads at once, each handing its database
    connection back at the end; fails the test with the first exception a writer raised, or
    if one has not finished within `timeout` seconds."""
    import threading

    from django.db import connection

    def run(writer, n: int, timeout: float = 60) -> None:
        errors: list[BaseException] = []

        def body(k: int) -> None:
            try:
                writer(k)
            except Exception as exc:  # surfaced below
                errors.append(exc)
            finally:
                connection.close()

        threads = [threading.Thread(target=body, args=(k,)) for k in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout)
        assert not any(t.is_alive() for t in threads), "a writer did not finish"
        assert errors == []

    return run
