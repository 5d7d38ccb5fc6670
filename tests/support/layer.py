"""A listener on the real channel layer that survives a timed-out wait.

channels_redis's pub/sub layer unsubscribes a channel whose `receive` is cancelled, so
`asyncio.wait_for(layer.receive(...), t)` running out loses whatever is published before the
next receive. Here a wait that runs out leaves its receive pending for the next one."""

from __future__ import annotations

import asyncio

from channels.layers import get_channel_layer


class LayerListener:
    def __init__(self, layer, channel: str, groups: tuple[str, ...]):
        self.layer, self.channel, self.groups = layer, channel, groups
        self._pending: asyncio.Future | None = None

    @classmethod
    async def join(cls, *groups: str) -> LayerListener:
        layer = get_channel_layer()
        channel = await layer.new_channel()
        for group in groups:
            await layer.group_add(group, channel)
        return cls(layer, channel, groups)

    async def next(self, timeout: float = 5.0) -> dict:
        """The next message; asyncio.TimeoutError if none arrives within timeout."""
        if self._pending is None:
            self._pending = asyncio.ensure_future(self.layer.receive(self.channel))
        done, _ = await asyncio.wait({self._pending}, timeout=timeout)
        if not done:
            raise TimeoutError
        pending, self._pending = self._pending, None
        return pending.result()

    async def nothing_more(self, timeout: float = 0.3) -> None:
        try:
            message = await self.next(timeout)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected message: {message!r}")

    async def leave(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            await asyncio.gather(self._pending, return_exceptions=True)
            self._pending = None
        for group in self.groups:
            await self.layer.group_discard(group, self.channel)
