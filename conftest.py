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

import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _database_url() -> str:
    """URL of the test database pytest-django created, for a child process."""
    from django.db import connection

    sd = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{sd['NAME']}"
    auth = sd["USER"] or "postgres"
    if sd.get("PASSWORD"):
        auth += f":{sd['PASSWORD']}"
    return f"postgres://{auth}@{sd['HOST'] or '127.0.0.1'}:{sd['PORT'] or 5432}/{sd['NAME']}"


class DaphneProcess:
    def __init__(self, port: int, env: dict[str, str], log: Path):
        self.port = port
        self.log_path = log
        self._log = open(log, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "aiim_project.asgi:application"],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/api/aiim/ws"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daphne exited early:\n{self.log_path.read_text()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"daphne did not listen on {self.port}:\n{self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to clean up (a crash)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


@pytest.fixture
def daphne(transactional_db, tmp_path):
    """daphne(n=1, **env) -> [DaphneProcess]: real servers on free ports sharing this
    test's database (and Redis, on the Postgres + Redis pass)."""
    started: list[DaphneProcess] = []

    def start(n: int = 1, **extra_env: str) -> list[DaphneProcess]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
        env.update(
            DJANGO_SETTINGS_MODULE="aiim_project.settings",
            DATABASE_URL=_database_url(),
            DEBUG="true",
            RATE_LIMIT_PER_SEC="0",
            LOG_LEVEL="WARNING",
        )
        env.update({k: str(v) for k, v in extra_env.items()})
        procs = []
        for _ in range(n):
            port = _free_port()
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
