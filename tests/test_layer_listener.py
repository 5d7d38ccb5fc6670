"""The test helper's promise, on whichever channel layer the run uses: a wait that runs out
loses nothing published afterwards (a cancelled channels_redis receive drops the channel)."""

import asyncio

import pytest
from channels.layers import get_channel_layer

from tests.support.layer import LayerListener


async def test_a_timed_out_wait_loses_nothing_published_after_it():
    listener = await LayerListener.join("probe")
    with pytest.raises(asyncio.TimeoutError):
        await listener.next(0.2)
    await get_channel_layer().group_send("probe", {"type": "probe", "n": 1})
    assert (await listener.next(5))["n"] == 1
    await listener.nothing_more()
    await listener.leave()
