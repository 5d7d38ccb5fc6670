"""Per-user rate limit (`RATE_LIMIT_PER_SEC`): a fixed one-second window per (tenant, user), one
INCR + EXPIRE in Redis (in process when embedded). Redis unreachable: the request goes through
(the write it guards answers 503 on its own if it needs Redis).
"""

from __future__ import annotations

import logging
import threading
import time

from django.conf import settings
from rest_framework.throttling import BaseThrottle

from aiim_project.core import redis as aiim_redis
from aiim_project.core.errors import RateLimited, dependency_error_types
from aiim_project.core.metrics import RATE_LIMITED

logger = logging.getLogger("aiim.ratelimit")

_local_lock = threading.Lock()
_local: dict[tuple[str, str, int], int] = {}


def _key(tenant: str, user_id: str, window: int) -> str:
    # The tenant's length keeps ("a:b", "c") and ("a", "b:c") apart: ids are opaque strings.
    return f"aiim:rl:{len(tenant)}:{tenant}:{user_id}:{window}"


def _local_hit(tenant: str, user_id: str, window: int) -> int:
    with _local_lock:
        if len(_local) > 10_000:
            for k in [k for k in _local if k[2] < window]:
                del _local[k]
        key = (tenant, user_id, window)
        _local[key] = _local.get(key, 0) + 1
        return _local[key]


def _retry_after(now: float) -> float:
    return max(0.05, 1.0 - (now % 1.0))


def _refuse_over_limit(count: int, now: float, via: str) -> None:
    limit = settings.RATE_LIMIT_PER_SEC
    if count > limit:
        RATE_LIMITED.labels(via=via).inc()
        raise RateLimited(f"Over {limit} requests per second.", retry_after=_retry_after(now))


def _hit_pipeline(client, key: str):
    pipe = client.pipeline(transaction=False)
    pipe.incr(key)
    pipe.expire(key, 2)
    return pipe


def check(tenant: str, user_id: str, *, via: str = "rest") -> None:
    if settings.RATE_LIMIT_PER_SEC <= 0:
        return
    now = time.time()
    window = int(now)
    client = aiim_redis.sync_client()
    if client is None:
        count = _local_hit(tenant, user_id, window)
    else:
        try:
            count = _hit_pipeline(client, _key(tenant, user_id, window)).execute()[0]
        except dependency_error_types() as exc:
            logger.warning("rate limiter skipped, Redis unavailable: %s", type(exc).__name__)
            return
    _refuse_over_limit(count, now, via)


async def acheck(tenant: str, user_id: str, *, via: str = "ws") -> None:
    """`check` for async code: the same window and key, through the async Redis client."""
    if settings.RATE_LIMIT_PER_SEC <= 0:
        return
    now = time.time()
    window = int(now)
    client = aiim_redis.async_client()
    if client is None:
        count = _local_hit(tenant, user_id, window)
    else:
        try:
            count = (await _hit_pipeline(client, _key(tenant, user_id, window)).execute())[0]
        except dependency_error_types() as exc:
            logger.warning("rate limiter skipped, Redis unavailable: %s", type(exc).__name__)
            return
    _refuse_over_limit(count, now, via)


class UserWriteThrottle(BaseThrottle):
    """Counts writes only (POST, PUT, PATCH, DELETE): reads are cheap and clients poll them."""

    def allow_request(self, request, view) -> bool:
        if request.method in ("GET", "HEAD", "OPTIONS"):
            return True
        user = request.user
        if user is None or not getattr(user, "is_authenticated", False):
            return True
        check(user.tenant, user.user_id)
        return True
