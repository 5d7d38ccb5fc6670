"""Seq allocation: one small interface, two backends, called under the conversation's row lock.
Why commits are serialized per conversation, the floored Redis counter, and why no read can
skip a message: docs/architecture.md, "Seq allocation and why no read can skip a message".
"""

from __future__ import annotations

from functools import lru_cache
from typing import Protocol

from django.conf import settings

from aiim_project.core import redis as aiim_redis

# A counter lives this long after its conversation's last allocation. A missing counter is
# seeded from the floor (the committed maximum), so an idle conversation's may go: Redis holds
# the active conversations' counters, not one for every conversation there ever was.
COUNTER_TTL_SECONDS = 7 * 24 * 3600

# KEYS[1] counter; ARGV[1] floor, ARGV[2] how many seqs, ARGV[3] TTL. Raise the counter to
# the floor if it is missing or lower (never lower it), then INCRBY: returns the last seq of
# the range.
_INCR_WITH_FLOOR = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local floor = tonumber(ARGV[1])
if current < floor then
  redis.call('SET', KEYS[1], floor)
end
local last = redis.call('INCRBY', KEYS[1], tonumber(ARGV[2] or '1'))
redis.call('EXPIRE', KEYS[1], ARGV[3])
return last
"""

_RAISE_FLOOR = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local floor = tonumber(ARGV[1])
if current < floor then
  redis.call('SET', KEYS[1], floor, 'EX', ARGV[2])
  return floor
end
return current
"""

# KEYS[1] counter; ARGV[1] first, ARGV[2] last seq of a range that was never stored. Set the
# counter back to before the range only if nothing was allocated after it.
_GIVE_BACK = """
if tonumber(redis.call('GET', KEYS[1]) or '0') == tonumber(ARGV[2]) then
  redis.call('SET', KEYS[1], tonumber(ARGV[1]) - 1, 'KEEPTTL')
  return 1
end
return 0
"""


def seq_key(conversation_id: str) -> str:
    return f"aiim:seq:{conversation_id}"


class SeqAllocator(Protocol):
    name: str

    def allocate(self, *, conversation_id: str, floor: int, count: int = 1) -> int:
        """Next seq of the conversation, strictly above `floor` (the committed maximum).
        With `count` > 1, the first of `count` consecutive seqs (one send run's)."""

    def raise_floor(self, *, conversation_id: str, floor: int) -> int:
        """Make sure the next allocation is above `floor`; returns the counter's value."""

    def give_back(self, *, conversation_id: str, first: int, last: int) -> bool:
        """The range first..last was allocated and its transaction rolled back, and no stored
        seq is at or above `first`: let the next allocation hand it out again, if nothing was
        allocated after it. True if the counter is before the range afterwards."""


class DatabaseSeqAllocator:
    """Embedded mode: the locked conversation row's `last_seq` is the counter."""

    name = "database"

    def allocate(self, *, conversation_id: str, floor: int, count: int = 1) -> int:
        return floor + 1

    def raise_floor(self, *, conversation_id: str, floor: int) -> int:
        return floor

    def give_back(self, *, conversation_id: str, first: int, last: int) -> bool:
        return True  # the counter is last_seq, which rolled back with the transaction


class RedisSeqAllocator:
    name = "redis"

    def __init__(self, client) -> None:
        self._client = client
        self._incr = client.register_script(_INCR_WITH_FLOOR)
        self._raise = client.register_script(_RAISE_FLOOR)
        self._give_back = client.register_script(_GIVE_BACK)

    def allocate(self, *, conversation_id: str, floor: int, count: int = 1) -> int:
        last = int(self._incr(keys=[seq_key(conversation_id)], args=[floor, count, COUNTER_TTL_SECONDS]))
        return last - count + 1

    def raise_floor(self, *, conversation_id: str, floor: int) -> int:
        return int(self._raise(keys=[seq_key(conversation_id)], args=[floor, COUNTER_TTL_SECONDS]))

    def give_back(self, *, conversation_id: str, first: int, last: int) -> bool:
        return bool(self._give_back(keys=[seq_key(conversation_id)], args=[first, last]))


@lru_cache(maxsize=1)
def get_allocator() -> SeqAllocator:
    client = aiim_redis.sync_client()
    if client is not None and settings.SEQ_BACKEND == "redis":
        return RedisSeqAllocator(client)
    return DatabaseSeqAllocator()
