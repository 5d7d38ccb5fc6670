"""Events: built once, serialized once, published only after the transaction commits.

The channel layer carries hints that something was committed; the database stays the
truth. A subscriber that sees a gap in seq reads it from the database (see
`messaging.delivery`), so a lost or reordered hint costs latency, never a message.

Channel-layer message shape (`type` routes it to the gateway's `aiim_event` handler):
    {"type": "aiim.event", "conversation_id": str, "event": str, "seq": int | None,
     "frame": str (the complete JSON text frame, encoded once for every subscriber),
     "group": str (the group it was sent to: a process receives each event once and hands
     it to its own connections in that group),
     ...extra routing fields (e.g. "user_id" for membership changes)}
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from typing import Any

import orjson
from asgiref.sync import SyncToAsync, async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

logger = logging.getLogger("aiim.events")

EVENT_TYPE = "aiim.event"
# No "." in a raw part: the parts are joined with dots, so tenant "a.user.b" + user "c" and
# tenant "a" + user "b.user.c" would share a group. Such ids are hashed instead.
_GROUP_SAFE = re.compile(r"^[A-Za-z0-9_-]+$")


def _safe(part: str) -> str:
    if _GROUP_SAFE.match(part) and len(part) <= 40:
        return part
    return "h" + hashlib.sha1(part.encode()).hexdigest()


def conversation_group(tenant: str, conversation_id: str) -> str:
    return f"t.{_safe(tenant)}.conv.{_safe(conversation_id)}"


def user_group(tenant: str, user_id: str) -> str:
    return f"t.{_safe(tenant)}.user.{_safe(user_id)}"


def channel_name(conversation_id: str) -> str:
    return f"im:conv:{conversation_id}"


def dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def event_frame(conversation_id: str, event: str, data: dict[str, Any]) -> str:
    return dumps(
        {
            "type": "event",
            "channel": channel_name(conversation_id),
            "data": {"event": event, "conversation_id": conversation_id, **data},
        }
    )


def build(conversation_id: str, event: str, data: dict[str, Any], *, seq: int | None = None, **route: Any) -> dict:
    return {
        "type": EVENT_TYPE,
        "conversation_id": conversation_id,
        "event": event,
        "seq": seq,
        "frame": event_frame(conversation_id, event, data),
        **route,
    }


def _log_failure(task: asyncio.Future) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning("event publish failed: %s", type(task.exception()).__name__)


async def group_send(group: str, message: dict) -> None:
    await get_channel_layer().group_send(group, {**message, "group": group})


async def _group_send(groups: list[str], message: dict) -> None:
    for group in groups:
        await group_send(group, message)


def publish_now(groups: list[str], message: dict) -> None:
    """Hand the event to the channel layer without making the caller wait for it.

    Inside the ASGI server the ORM runs in a worker thread of the server's event loop; the
    publish is scheduled on that loop (fire and forget: the database is the truth). Outside
    a server (management commands, tests) it runs to completion here.
    """
    # Called right after commit: subscribers measure commit-to-socket latency from here.
    message["committed_at"] = time.time()
    loop = getattr(SyncToAsync.threadlocal, "main_event_loop", None)
    if loop is not None and loop.is_running():
        future = asyncio.run_coroutine_threadsafe(_group_send(groups, message), loop)
        future.add_done_callback(_log_failure)
        return
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        try:
            async_to_sync(_group_send)(groups, message)
        except Exception as exc:  # the write has committed; a lost hint is recovered by readers
            logger.warning("event publish failed: %s", type(exc).__name__)
        return
    task = asyncio.get_running_loop().create_task(_group_send(groups, message))
    task.add_done_callback(_log_failure)


def publish_on_commit(groups: list[str], message: dict) -> None:
    transaction.on_commit(lambda: publish_now(groups, message), robust=True)
