"""Shared Redis clients (None in embedded mode). Short timeouts: a dead Redis must turn
into a quick 503, never a hung request."""

from __future__ import annotations

from functools import lru_cache

import redis
import redis.asyncio
from django.conf import settings

from .per_loop import PerLoop

_TIMEOUTS = {"socket_connect_timeout": 1.0, "socket_timeout": 2.0, "health_check_interval": 30}


def redis_enabled() -> bool:
    return bool(settings.REDIS_URL)


@lru_cache(maxsize=1)
def sync_client() -> redis.Redis | None:
    if not settings.REDIS_URL:
        return None
    return redis.Redis.from_url(settings.REDIS_URL, max_connections=64, **_TIMEOUTS)


# asyncio connections cannot cross loops: one client per loop, dropped with its loop.
_async_clients: PerLoop[redis.asyncio.Redis] = PerLoop(
    lambda loop: redis.asyncio.Redis.from_url(settings.REDIS_URL, **_TIMEOUTS)
)


def async_client() -> redis.asyncio.Redis | None:
    if not settings.REDIS_URL:
        return None
    return _async_clients.get()
