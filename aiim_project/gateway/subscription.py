"""Opening a conversation subscription: shared by the WebSocket consumer and the SSE stream.

The order is what makes the guarantee of `messaging.delivery` hold across the seam between
stored and live: join the hub's group FIRST, then read the snapshot (last seq L and the
replay rows after since_seq), replay, continue live at L + 1, and read the tail once after
`WS_GAP_WAIT_MS` (an event published before the layer had the group is read from the
database). A subscriber is anything with the hub's member interface (`hub_event`,
`hub_resync`) whose events go to `sub.offer` once `open_subscription` returns.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from django.conf import settings

from messaging import delivery, events, selectors
from messaging.db import in_worker

logger = logging.getLogger("aiim.gateway")


async def load_stored(
    tenant: str, user_id: str, conversation_id: str, after_seq: int, up_to_seq: int, limit: int
) -> list[delivery.StoredMessage]:
    def read() -> list[delivery.StoredMessage]:
        # Reads are rare (subscribe tail, gaps, resync) and follow lost events: check that
        # the member.left ending this subscription was not among them.
        if not selectors.is_member(tenant=tenant, user_id=user_id, conversation_id=conversation_id):
            raise delivery.SubscriptionRevoked()
        rows = selectors.messages_after(conversation_id=conversation_id, after_seq=after_seq, limit=limit, up_to_seq=up_to_seq)
        return delivery.stored_messages(rows, selectors.members_of(conversation_id)) if rows else []

    # Reads need no thread affinity: off the single thread-sensitive executor, they run
    # beside the sends instead of queueing behind them.
    return await in_worker(read)()


def snapshot(**kw: Any) -> tuple[int, list[delivery.StoredMessage] | None]:
    last_seq, rows = selectors.subscription_snapshot(**kw)
    if not rows:
        return last_seq, rows
    return last_seq, delivery.stored_messages(rows, selectors.members_of(kw["conversation_id"]))


@dataclass
class Opened:
    sub: delivery.OrderedDelivery
    replay: list[delivery.StoredMessage]
    last_seq: int
    recovered: bool  # False: more than WS_RECOVERY_LIMIT were missed, the client pages over REST


async def open_subscription(
    *,
    hub: Any,
    member: Any,
    tenant: str,
    user_id: str,
    conversation_id: str,
    since_seq: int | None,
    send: Callable[[str], None],
    on_revoked: Callable[[], Awaitable[None]],
    leave_on_failure: bool = True,
) -> Opened:
    """Join, then read the snapshot; raises the selector's NotFound/Forbidden (after leaving)."""
    group = events.conversation_group(tenant, conversation_id)
    try:
        # Join BEFORE reading: every seq above the snapshot then reaches the member.
        await hub.join(group, member)
        last_seq, rows = await in_worker(snapshot)(
            tenant=tenant,
            user_id=user_id,
            conversation_id=conversation_id,
            since_seq=since_seq,
            limit=settings.WS_RECOVERY_LIMIT,
        )
    except BaseException:
        if leave_on_failure:
            await hub.leave(group, member)
        raise
    replay = rows or []
    sub = delivery.OrderedDelivery(
        send=send,
        load=partial(load_stored, tenant, user_id, conversation_id),
        next_seq=(replay[0].seq if replay else last_seq + 1),
        gap_wait=settings.WS_GAP_WAIT_MS / 1000,
        on_revoked=on_revoked,
    )
    return Opened(sub=sub, replay=replay, last_seq=last_seq, recovered=rows is not None)


async def start(sub: delivery.OrderedDelivery, replay: list[delivery.StoredMessage], last_seq: int) -> None:
    """Send the replay, then continue live after the snapshot's last seq."""
    await sub.replay(replay)
    sub.next_seq = max(sub.next_seq, last_seq + 1)


async def check_tail_later(sub: delivery.OrderedDelivery) -> None:
    await asyncio.sleep(settings.WS_GAP_WAIT_MS / 1000)
    try:
        await sub.check_tail()
    except Exception as exc:
        logger.warning("subscription tail check failed: %s", type(exc).__name__)
