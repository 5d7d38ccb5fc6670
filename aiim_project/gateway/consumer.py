"""The WebSocket gateway (docs/protocol.md section 3): one consumer per connection.

It connects, dispatches each client frame through its frame table, and closes; the socket,
runs, subscriptions and the hub are their own modules (docs/gateway.md, "Modules").
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from aiim_project.core import events, presence, ratelimit
from aiim_project.core.errors import Invalid, RateLimited, as_aiim_error
from aiim_project.core.frames import FrameSpec
from aiim_project.core.logs import conn_id_var
from aiim_project.core.metrics import WS_CONNECTIONS, WS_FRAMES_IN, WS_FRAMES_OUT, WS_SLOW_CONSUMERS

from . import delivery, fanout_lag, parsing
from .hub import FRAMES_OUT_EVENT, Wire, get_hub
from .liveness import CLOSE_UNAUTHORIZED, Liveness
from .runs import Runs
from .socket import Socket
from .subscriptions import Subscriptions

logger = logging.getLogger("aiim.gateway")

# The client stopped reading: its unsent frames passed WS_SEND_BUFFER_BYTES.
CLOSE_SLOW_CONSUMER = 4413
CLOSE_SERVER_ERROR = 1011


class GatewayConsumer(AsyncWebsocketConsumer):
    tenant: str
    user_id: str
    conn_id: str
    # No channel-layer channel per connection: events come through the hub.
    channel_layer_alias = "aiim.no-channel-per-connection"

    def __init__(self, *, frames: Mapping[str, FrameSpec], load_chunks: delivery.ChunkLoader | None = None) -> None:
        super().__init__()
        self.frames = frames
        self._load_chunks = load_chunks
        self.runs = Runs(self)

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except Exception as exc:
            # The channel layer (Redis) can fail before any handler runs or while it runs.
            # Release what the connection holds, make sure the handshake completed, and let
            # the error end the application: Daphne then closes with 1011 (it refuses 1011
            # from `send`).
            if as_aiim_error(exc) is None:
                raise
            logger.warning("ws connection ended: dependency unavailable: %s", type(exc).__name__)
            if getattr(self, "principal", None) is not None:
                await self.disconnect(CLOSE_SERVER_ERROR)
            if not getattr(self, "_accepted", False) and (await receive())["type"] == "websocket.connect":
                await send({"type": "websocket.accept"})
            raise

    async def dispatch(self, message: dict) -> None:
        if message["type"] == "websocket.receive":
            # Events that arrive while a frame is handled wait until its answer is out: the
            # ack (or error) comes before any event the frame caused, and a subscription
            # being set up sees no event before its replay.
            self._busy += 1
            try:
                await self.websocket_receive(message)
            finally:
                self._busy -= 1
                if not self._busy and self._deferred:
                    self._take_deferred()
        elif message["type"] in ("websocket.connect", "websocket.disconnect"):
            # Not through Channels' dispatch: its aclose_old_connections() is a hop to the one
            # thread-sensitive thread per connect, and neither handler reaches the ORM.
            await getattr(self, message["type"].replace(".", "_"))(message)
        else:
            await super().dispatch(message)

    @property
    def open(self) -> bool:
        return self.principal is not None and not self._closing

    # -- connection lifecycle ---------------------------------------------------------

    async def connect(self) -> None:
        self.principal = None
        self._after_reply: list[Any] = []
        self._background: set[asyncio.Task] = set()
        self._watchdog: asyncio.Task | None = None
        self._closing = False
        self.socket = Socket(self.base_send, self._on_overflow)
        self._hub = get_hub()
        self._busy = 0
        self._deferred: deque[tuple[dict, Wire]] = deque()
        # Every log line of this connection carries its id. Daphne runs each connection in
        # its own task, so the context variable set here is this connection's alone, and the
        # tasks and worker threads it starts inherit it.
        self.conn_id = uuid.uuid4().hex
        conn_id_var.set(self.conn_id)
        principal = self.scope.get("principal")
        if principal is None or (principal.expires_at is not None and principal.expires_at <= time.time()):
            await self._accept()
            err = self.scope.get("auth_error")
            logger.info("ws auth refused: %s", err.code if err else "token_expired")
            await self.close(CLOSE_UNAUTHORIZED)
            return
        self.tenant, self.user_id = principal.tenant, principal.user_id
        self.subscriptions = Subscriptions(
            tenant=self.tenant,
            user_id=self.user_id,
            hub=self._hub,
            member=self,
            emit=self.socket.emit,
            send_text=self._send_text,
            spawn=self._spawn,
            load_chunks=self._load_chunks,
        )
        self._user_group = events.user_group(self.tenant, self.user_id)
        try:
            await self._hub.join(self._user_group, self)
        except Exception as exc:
            if as_aiim_error(exc) is None:
                raise
            logger.warning("ws connect: channel layer unavailable: %s", type(exc).__name__)
            await self._accept()
            await self.close(CLOSE_SERVER_ERROR)
            return
        await self._accept()
        self.principal = principal
        WS_CONNECTIONS.inc()
        self.liveness = Liveness(
            tenant=self.tenant,
            user_id=self.user_id,
            conn_id=self.conn_id,
            expires_at=principal.expires_at,
            send_text=self._send_text,
            close=self._close,
            closing=lambda: self._closing,
        )
        self.liveness.start()
        self._watchdog = asyncio.create_task(self.liveness.watch())

    async def _accept(self) -> None:
        await self.accept(self.scope.get("accept_subprotocol"))
        self._accepted = True

    async def websocket_disconnect(self, message: dict) -> None:
        # Channels' handler ends with the same hop (aclose_old_connections), which a storm of
        # disconnects queued one by one on that one thread; this consumer joins no layer
        # groups of its own (`self.groups`) and reads the database only through `in_worker`.
        await self.disconnect(message["code"])
        raise StopConsumer()

    async def disconnect(self, code: int) -> None:
        if self.principal is None:
            return
        self.principal = None
        WS_CONNECTIONS.dec()
        if self._watchdog is not None and self._watchdog is not asyncio.current_task():
            self._watchdog.cancel()
        for task in self._background:
            task.cancel()
        groups = [self._user_group, *self.subscriptions.close_all()]
        self._deferred.clear()
        try:
            for group in groups:
                await self._hub.leave(group, self)
            await presence.release(tenant=self.tenant, user_id=self.user_id, conn_id=self.conn_id)
        except Exception as exc:  # the lease expires on its own; the group entry too
            logger.warning("ws disconnect cleanup failed: %s", type(exc).__name__)

    async def _close(self, code: int) -> None:
        """Close from the server side; frames and events still in flight are ignored."""
        self._closing = True
        await self.socket.drain()  # what was already emitted goes out before the close
        await self.close(code)

    def _on_overflow(self) -> None:
        if self._closing:
            return
        logger.warning("ws closed: client not reading, send buffer over %d bytes", settings.WS_SEND_BUFFER_BYTES)
        WS_SLOW_CONSUMERS.inc()
        self._closing = True
        self._spawn(self._close(CLOSE_SLOW_CONSUMER))

    # -- client frames ----------------------------------------------------------------

    async def websocket_receive(self, message: dict) -> None:
        # A run may take the next message from Daphne's queue without batching it: it is
        # handled here, in order, before Channels' loop gets another.
        pending: deque[dict] = deque()
        await self._receive_frame(message, pending)
        while pending:
            message = pending.popleft()
            self.runs.held -= 1
            if message["type"] == "websocket.receive":
                await self._receive_frame(message, pending)
            else:  # websocket.disconnect
                await super().dispatch(message)

    async def _receive_frame(self, message: dict, pending: deque[dict]) -> None:
        self.flow_control()
        if not self.open:
            return
        self.touch()
        frame: Any = None
        try:
            frame = parsing.decode(message)
            spec = self.lookup(frame)
            parsing.check_required(frame, spec.required)
        except Exception as exc:
            await self._send_error(exc, frame if isinstance(frame, dict) else None)
            return
        if spec.batch is None:
            await self.handle(frame, spec)
            return
        refused = self.runs.take_refusal(message)
        try:
            if refused is not None:
                # Counted (and refused) when a run took it from the queue: it is not
                # counted again, or one refusal would count twice against the window.
                raise refused
            await self._admit(spec)
        except Exception as exc:
            await self._send_error(exc, frame)
            return
        run = await self.runs.take(frame, spec, pending)
        if len(run) > 1:
            await self.runs.handle(spec, run)
        else:
            await self.handle(frame, spec, admitted=True)

    def touch(self) -> None:
        self.liveness.touch()

    def flow_control(self) -> None:
        self.socket.flow_control(self.runs.held)

    def lookup(self, frame: dict) -> FrameSpec:
        frame_type = frame.get("type")
        if isinstance(frame_type, str) and frame_type in self.frames:
            WS_FRAMES_IN.labels(frame_type).inc()
            return self.frames[frame_type]
        WS_FRAMES_IN.labels("unknown").inc()
        raise Invalid(f"Unknown frame type {frame_type!r}." if isinstance(frame_type, str) else "Frame has no 'type'.")

    async def _admit(self, spec: FrameSpec) -> None:
        """What a frame passes before its handler: the rate limit, then fan-out lag."""
        if spec.rate_limited:
            await ratelimit.acheck(self.tenant, self.user_id)
        if spec.waits_for_fanout:
            await fanout_lag.LAG.wait()

    async def handle(self, frame: dict, spec: FrameSpec, *, admitted: bool = False) -> None:
        """One parsed frame through its handler: the reply, or the error frame. `admitted`:
        the frame has passed `_admit` already (as part of a run)."""
        try:
            if not admitted:
                await self._admit(spec)
            reply = await spec.handler(self, frame)
        except Exception as exc:
            await self._send_error(exc, frame)
            return
        finally:
            after, self._after_reply = self._after_reply, []
        if reply is not None:
            await self.reply(frame, reply)
        for step in after:
            done = step()
            if inspect.isawaitable(done):
                await done

    async def reply(self, frame: dict, reply: dict) -> None:
        if isinstance(frame.get("req_id"), str):
            reply["req_id"] = frame["req_id"]
        await self._send_text(orjson.dumps(reply).decode(), reply.get("type", "reply"))

    async def _send_error(self, exc: BaseException, frame: dict | None) -> None:
        err, text = parsing.error_frame(exc, frame)
        await self._send_text(text, "error")
        if isinstance(err, RateLimited):
            await self.liveness.count_strike()

    async def _send_text(self, text: str, kind: str) -> None:
        WS_FRAMES_OUT.labels(kind).inc()
        self.socket.emit(text)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- the frame handlers' Connection (aiim_project.core.frames) ----------------------

    def after_reply(self, step: Callable[[], object]) -> None:
        self._after_reply.append(step)

    def is_subscribed(self, conversation_id: str) -> bool:
        return self.subscriptions.is_subscribed(conversation_id)

    async def rate_limit(self) -> None:
        await ratelimit.acheck(self.tenant, self.user_id)

    async def subscribe(self, conversation_id: str, since_seq: int | None) -> dict[str, Any]:
        reply, start = await self.subscriptions.subscribe(conversation_id, since_seq)
        # Order on the wire: `subscribed` first, then the replay, then live events.
        self.after_reply(start)
        return reply

    async def unsubscribe(self, conversation_id: str) -> None:
        await self.subscriptions.unsubscribe(conversation_id)

    # -- events, from the hub -----------------------------------------------------------

    def hub_event(self, message: dict, wire: Wire) -> int:
        """Hand one event to this connection; returns how many frames it sent now."""
        if not self.open:
            return 0
        if self._busy:
            self._deferred.append((message, wire))
            return 0
        return self.subscriptions.hub_event(message, wire)

    def _take_deferred(self) -> None:
        sent = 0
        while self._deferred and not self._busy:
            sent += self.hub_event(*self._deferred.popleft())
        if sent:
            FRAMES_OUT_EVENT.inc(sent)

    def hub_resync(self) -> None:
        """The channel layer lost Redis and is subscribed again: every subscription
        re-reads its tail from the database."""
        if self.open:
            self.subscriptions.resync()
