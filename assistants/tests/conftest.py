"""Fixtures of the assistants tests: admin clients, assistants, and the fake model server."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from aiim_project.core.auth import mint_token


@pytest.fixture(autouse=True)
def _fresh_trigger_cache():
    """Which tenants have assistants is cached per process: no test sees another's."""
    from assistants import triggers

    triggers._tenants.clear()
    yield
    triggers._tenants.clear()


@pytest.fixture
def admin_api():
    def make(user_id: str = "root", tenant: str = "default") -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {mint_token(user_id=user_id, tenant=tenant, role='admin')}")
        return client

    return make


@pytest.fixture
def make_assistant(db):
    from assistants import services

    def make(assistant_id: str = "bot", tenant: str = "default", base_url: str = "http://127.0.0.1:9/v1", **fields):
        fields.setdefault("name", "Bot")
        fields.setdefault("model", "fake-1")
        return services.assistant_create(
            tenant=tenant, is_admin=True, assistant_id=assistant_id, data=services.AssistantInput(base_url=base_url, **fields)
        )

    return make



@pytest.fixture
async def runner(settings):
    """This test loop's runner (the in-process gateway tests start none by themselves)."""
    import asyncio

    from assistants.runner import Runner

    settings.ASSISTANT_POLL_INTERVAL = 0.05
    settings.ASSISTANT_RETRY_BACKOFF = 0.05
    r = Runner()
    task = asyncio.get_running_loop().create_task(r.run_forever())
    yield r
    task.cancel()
    # Bounded: a run blocked in a worker thread finishes on its own; the test must not hang.
    await asyncio.wait({task}, timeout=5)
