"""Shared Redis clients (None in embedded mode). Short timeouts: a dead Redis must turn
into a quick 503, never a hung request."""

from __future__ import annotations

from functools import lru_cache

import redis
import redis.asyncio
from django.conf import settings

_TIMEOUTS = {"socket_connect_timeout": 1.0, "socket_timeout": 2.0, "health_check_interval": 30}


def redis_enabled() -> bool:
    return bool(settings.REDIS_URL)


@lru_cache(maxsize=1)
def sync_client() -> redis.Redis | None:
    if not settings.REDIS_URL:
        return None
    return redis.Redis.from_url(settings.REDIS_URL, max_connections=64, **_TIMEOUTS)


_async_clients: dict[int, redis.asyncio.Redis] = {}


def async_client() -> redis.asyncio.Redis | None:
    """One client per event loop: asyncio connections cannot cross loops."""
    if not settings.REDIS_URL:
        return None
    import asyncio

    loop = asyncio.get_running_loop()
    client = _async_clients.get(id(loop))
    if client is None:
        client = redis.asyncio.Redis.from_url(settings.REDIS_URL, **_TIMEOUTS)
        _async_clients[id(loop)] = client
    return client
