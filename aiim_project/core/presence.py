"""Presence: a user is online while one of their connections is open and active. A lease per
connection in a Redis sorted set (or in process), renewed by frames (docs/gateway.md, "Presence").
"""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime

from django.conf import settings

from . import redis as aiim_redis
from .batches import Batcher
from .per_loop import PerLoop

_SEEN_TTL = 30 * 86400
MAX_LOOKUP = 200

_lock = threading.Lock()
_leases: dict[tuple[str, str], dict[str, float]] = {}
_seen: dict[tuple[str, str], float] = {}


def _ttl() -> float:
    return settings.WS_IDLE_TIMEOUT


def renew_interval() -> float:
    return _ttl() / 4


def _key(tenant: str, user_id: str) -> str:
    # Length-prefixed so that ("a:b", "c") and ("a", "b:c") never share a key.
    return f"aiim:presence:{len(tenant)}:{tenant}:{user_id}"


def _seen_key(tenant: str, user_id: str) -> str:
    return f"aiim:seen:{len(tenant)}:{tenant}:{user_id}"


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


async def renew(*, tenant: str, user_id: str, conn_id: str) -> None:
    await _write(_RENEW, tenant, user_id, conn_id)


def renew_soon(*, tenant: str, user_id: str, conn_id: str) -> asyncio.Future:
    """`renew`, queued now without waiting for it: a release queued later is written after it."""
    return _write(_RENEW, tenant, user_id, conn_id)


async def release(*, tenant: str, user_id: str, conn_id: str) -> None:
    await _write(_RELEASE, tenant, user_id, conn_id)


_RENEW, _RELEASE = "renew", "release"
# Bounds one script call; more wait for the next.
MAX_WRITES = 500


def _write(kind: str, tenant: str, user_id: str, conn_id: str) -> asyncio.Future:
    if aiim_redis.async_client() is None:
        _write_local(kind, tenant, user_id, conn_id, time.time())
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done
    # Coalesced with the process's other lease writes: after a deploy, a thousand connects
    # renew at once, and one script call serves them all in one round trip (and on one of
    # the pool's connections instead of a new one each).
    return _writes.get().submit((kind, tenant, user_id, conn_id))


def _write_local(kind: str, tenant: str, user_id: str, conn_id: str, now: float) -> None:
    with _lock:
        if kind == _RENEW:
            _leases.setdefault((tenant, user_id), {})[conn_id] = now + _ttl()
        else:
            leases = _leases.get((tenant, user_id), {})
            leases.pop(conn_id, None)
            if not leases:
                _leases.pop((tenant, user_id), None)
        _seen[(tenant, user_id)] = now


# One script call writes a whole batch: a pipeline of four commands per renewal cost the
# event loop ~20 us per command to pack and parse (2,000 commands for 500 connects).
# KEYS: (lease key, last-seen key) per write; ARGV: now, lease expiry, key TTL, last-seen TTL,
# then (kind, connection id) per write.
_WRITE_SCRIPT = """
for i = 0, #KEYS / 2 - 1 do
  local lease, seen = KEYS[2 * i + 1], KEYS[2 * i + 2]
  local kind, conn = ARGV[5 + 2 * i], ARGV[6 + 2 * i]
  if kind == "renew" then
    redis.call("ZADD", lease, ARGV[2], conn)
    redis.call("ZREMRANGEBYSCORE", lease, "-inf", ARGV[1])
    redis.call("EXPIRE", lease, ARGV[3])
  else
    redis.call("ZREM", lease, conn)
  end
  redis.call("SET", seen, ARGV[1], "EX", ARGV[4])
end
return #KEYS / 2
"""


async def _write_batch(writes: list[tuple[str, str, str, str]]) -> list[None]:
    """The batch in one script call, in the order the writes were asked for."""
    now = time.time()
    keys: list[str] = []
    args: list[str | int] = [repr(now), repr(now + _ttl()), int(_ttl()) + 1, _SEEN_TTL]
    for kind, tenant, user_id, conn_id in writes:
        keys += [_key(tenant, user_id), _seen_key(tenant, user_id)]
        args += [kind, conn_id]
    await _scripts.get()(keys=keys, args=args)
    return [None] * len(writes)


# Registered per loop (the client is): EVALSHA, loaded again by redis-py after a Redis restart.
_scripts = PerLoop(lambda loop: aiim_redis.async_client().register_script(_WRITE_SCRIPT))


_writes: PerLoop[Batcher[tuple[str, str, str, str]]] = PerLoop(lambda loop: Batcher(_write_batch, MAX_WRITES))


def writes() -> Batcher | None:
    """This loop's lease writer (None without Redis: leases are written in process, at once)."""
    return _writes.get() if aiim_redis.async_client() is not None else None


def lookup(*, tenant: str, user_ids: list[str]) -> list[dict]:
    """[{user_id, online, last_seen_at}] in the order asked, within the caller's tenant."""
    now = time.time()
    client = aiim_redis.sync_client()
    if client is None:
        with _lock:
            rows = [
                (any(exp > now for exp in _leases.get((tenant, u), {}).values()), _seen.get((tenant, u)))
                for u in user_ids
            ]
    else:
        pipe = client.pipeline(transaction=False)
        for u in user_ids:
            pipe.zcount(_key(tenant, u), f"({now}", "+inf")
            pipe.get(_seen_key(tenant, u))
        replies = pipe.execute()
        rows = [
            (replies[i] > 0, float(replies[i + 1]) if replies[i + 1] is not None else None)
            for i in range(0, len(replies), 2)
        ]
    return [
        {"user_id": u, "online": online, "last_seen_at": _iso(seen)}
        for u, (online, seen) in zip(user_ids, rows, strict=True)
    ]
