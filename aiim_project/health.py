"""Health endpoints for load balancers and orchestrators (docs/protocol.md section 2.5). Liveness
needs no dependency (a restart will not fix a dead database); `/health` checks them
concurrently, each under HEALTH_CHECK_TIMEOUT, so a hung one is a quick 503, never a hung probe.
"""

from __future__ import annotations

import asyncio
import time
import uuid

from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from aiim_project.core import redis as aiim_redis
from aiim_project.core.db import in_worker

RETRY_AFTER_SECONDS = 5


def _database_ping() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


# Not thread-sensitive: a hung database must not also block the one shared sync thread that
# every other ORM call of this process waits on.
_database_ping_async = in_worker(_database_ping)


async def _check_database() -> None:
    await _database_ping_async()


async def _check_redis() -> None:
    await aiim_redis.async_client().ping()


async def _check_channel_layer() -> None:
    # A publish to a group nobody joins reaches the layer's backend (a Redis PUBLISH for the
    # Redis layers) without leaving a subscription behind, as a receive round trip would.
    layer = get_channel_layer()
    await layer.group_send(f"aiim.health.{uuid.uuid4().hex}", {"type": "aiim.health"})


async def _run(check, timeout: float) -> dict:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(check(), timeout)
    except TimeoutError:
        return {"status": "down", "error": f"no answer within {timeout:g}s"}
    except Exception as exc:  # any failure of a dependency is "down", never a 500
        return {"status": "down", "error": type(exc).__name__}
    return {"status": "ok", "latency_ms": round((time.perf_counter() - started) * 1000, 2)}


@never_cache
@require_GET
async def live(request):
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
async def health(request):
    timeout = settings.HEALTH_CHECK_TIMEOUT
    checks = {"database": _check_database, "channel_layer": _check_channel_layer}
    if aiim_redis.redis_enabled():
        checks["redis"] = _check_redis
    results = await asyncio.gather(*(_run(check, timeout) for check in checks.values()))
    dependencies = dict(zip(checks, results))
    if not aiim_redis.redis_enabled():
        dependencies["redis"] = {"status": "not_configured"}
    down = sorted(name for name, result in dependencies.items() if result["status"] == "down")
    # The original AIIM's `dependencies.redis` was a boolean; its readers switch to this
    # (docs/migrating.md). Not configured counts as false, as the original reported it.
    dependencies["redis_ok"] = dependencies["redis"]["status"] == "ok"
    if not down:
        return JsonResponse({"status": "ok", "dependencies": dependencies})
    response = JsonResponse({"status": "degraded", "down": down, "dependencies": dependencies}, status=503)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response
