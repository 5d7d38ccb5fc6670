"""Presence leases (aiim_project.core.presence) and GET /api/aiim/presence, on the real backend of
the pass: the in-process table when embedded, Redis on the Postgres + Redis pass."""

from __future__ import annotations

import asyncio
import time

import pytest
from asgiref.sync import async_to_sync

from aiim_project.core import presence
from aiim_project.core import redis as aiim_redis
from tests.support.ports import free_port

pytestmark = pytest.mark.django_db


def renew(user_id: str, conn_id: str, tenant: str = "default") -> None:
    async_to_sync(presence.renew)(tenant=tenant, user_id=user_id, conn_id=conn_id)


def release(user_id: str, conn_id: str, tenant: str = "default") -> None:
    async_to_sync(presence.release)(tenant=tenant, user_id=user_id, conn_id=conn_id)


def get(api, query: str, tenant: str = "default"):
    return api("viewer", tenant).get(f"/api/aiim/presence{query}")


def test_online_until_the_last_connection_goes(api):
    renew("p1", "conn-a")
    renew("p1", "conn-b")
    r = get(api, "?user_ids=p1,p2")
    assert r.status_code == 200
    rows = r.json()["presence"]
    assert [row["user_id"] for row in rows] == ["p1", "p2"]
    assert rows[0]["online"] is True and rows[0]["last_seen_at"].endswith("Z")
    assert rows[1] == {"user_id": "p2", "online": False, "last_seen_at": None}
    release("p1", "conn-a")
    assert get(api, "?user_ids=p1").json()["presence"][0]["online"] is True
    release("p1", "conn-b")
    row = get(api, "?user_ids=p1").json()["presence"][0]
    assert row["online"] is False and row["last_seen_at"]


def test_a_release_queued_right_after_a_renewal_is_written_after_it(api):
    """The gateway queues a renewal without waiting for it; a disconnect right after must
    still end offline."""

    async def connect_and_go() -> None:
        presence.renew_soon(tenant="default", user_id="p5", conn_id="conn")
        await presence.release(tenant="default", user_id="p5", conn_id="conn")

    async_to_sync(connect_and_go)()
    row = get(api, "?user_ids=p5").json()["presence"][0]
    assert row["online"] is False and row["last_seen_at"]


def test_renewals_of_many_connections_at_once_share_one_write(api, settings):
    users = [f"storm{i}" for i in range(60)]

    async def storm() -> int:
        writes = presence.writes()
        before = writes.batches if writes is not None else 0
        await asyncio.gather(*(presence.renew(tenant="default", user_id=u, conn_id=f"c-{u}") for u in users))
        return writes.batches - before if writes is not None else 0

    batches = async_to_sync(storm)()
    assert batches == (1 if settings.REDIS_URL else 0)
    rows = get(api, "?user_ids=" + ",".join(users)).json()["presence"]
    assert [row["online"] for row in rows] == [True] * len(users)


def test_a_lease_expires_without_renewal(api, settings):
    settings.WS_IDLE_TIMEOUT = 0.2
    renew("p3", "conn")
    assert get(api, "?user_ids=p3").json()["presence"][0]["online"] is True
    time.sleep(0.3)
    assert get(api, "?user_ids=p3").json()["presence"][0]["online"] is False


def test_other_tenants_user_with_the_same_id_is_offline(api):
    renew("p4", "conn", tenant="acme")
    assert get(api, "?user_ids=p4", tenant="acme").json()["presence"][0]["online"] is True
    assert get(api, "?user_ids=p4").json()["presence"][0] == {"user_id": "p4", "online": False, "last_seen_at": None}


def test_tenant_and_user_ids_with_separators_do_not_collide(api):
    renew("c", "conn", tenant="a:b")
    assert get(api, "?user_ids=b:c", tenant="a").json()["presence"][0]["online"] is False


@pytest.mark.parametrize("query", ["", "?user_ids=", "?user_ids=,,", "?user_ids=" + ",".join(f"u{i}" for i in range(201)), "?user_ids=" + "x" * 201])
def test_bad_queries_are_invalid(api, query):
    r = get(api, query)
    assert r.status_code == 400
    assert r.json()["code"] == "invalid"


def test_needs_a_token(client):
    r = client.get("/api/aiim/presence?user_ids=a")
    assert r.status_code == 401


@pytest.mark.redis
def test_redis_down_is_503_unavailable(api, settings):
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    aiim_redis.sync_client.cache_clear()
    try:
        r = get(api, "?user_ids=a")
        assert r.status_code == 503
        assert r.json()["code"] == "unavailable"
        assert r["Retry-After"]
    finally:
        aiim_redis.sync_client.cache_clear()
