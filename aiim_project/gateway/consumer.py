"""The WebSocket gateway (PROTOCOL.md section 3): one consumer per connection.

Thin on purpose: parse a frame, check it against the frame table, call the handler, render
the answer or the error. Ordering lives in `messaging.delivery`, one per subscription.

Events do not come through a channel per connection: the process's hub (`hub.py`) is the
one member of each group its connections watch, and hands each event to `hub_event`
synchronously, with its frame encoded once for all of them. So a connection has no
channel-layer channel of its own, and Channels' dispatch loop only carries client frames.

Output: every frame of a connection, replies and events alike, goes through `_emit` in call
order. Under Daphne it writes the WebSocket frame straight to the connection's transport
(synchronously: events are written while the hub's pass is running); elsewhere (the test
communicator) frames queue in an outbox that one task sends in order.

Event loop hygiene: Channels runs `aclose_old_connections()` (a thread hop) before every
handler. This consumer skips it for client frames: handlers reach the ORM only through
`database_sync_to_async` or `messaging.db.in_worker`, which close stale connections
themselves.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict, deque
from functools import partial
from typing import Any

import orjson
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from aiim_project import ratelimit
from aiim_project.logging import conn_id_var
from messaging import delivery, events, presence
from messaging.frames import FrameSpec
from messaging.errors import AiimError, Invalid, NotFound, RateLimited, TooLarge, as_aiim_error
from messaging.metrics import ERRORS, WS_CONNECTIONS, WS_FRAMES_IN, WS_FRAMES_OUT, WS_SLOW_CONSUMERS

from . import backpressure, fanout_lag, subscription
from .hub import FRAMES_OUT_EVENT, Wire, get_hub, text_frame
from .table import build_table

logger = logging.getLogger("aiim.gateway")

CLOSE_UNAUTHORIZED = 4401
CLOSE_IDLE = 4408
CLOSE_FLOOD = 4429
# The client stopped reading: its unsent frames passed WS_SEND_BUFFER_BYTES.
CLOSE_SLOW_CONSUMER = 4413
CLOSE_SERVER_ERROR = 1011
# A client that gets this many rate_limited errors within FLOOD_WINDOW seconds is closed.
FLOOD_STRIKES = 20
FLOOD_WINDOW = 5.0
# Client frames queued but not yet handled: above HIGH the socket is not read until the
# queue is down to LOW (flow control, see _flow_control).
INBOUND_HIGH_WATER = 64
INBOUND_LOW_WATER = 16
# At most this many queued frames go to one FrameSpec.batch call.
MAX_RUN = 64
# How long a run whose client had more frames queued waits for the next ones (seconds).
RUN_LINGER = 0.001
# A run waits only if it is shorter than the longest of this many of its connection's last runs.
RECENT_RUNS = 8
# Room for the envelope around the largest allowed content.
FRAME_OVERHEAD = 16 * 1024
# Copies of one event reaching a connection through two groups (conversation and user).
RECENT_PERSONAL = 128

FRAMES = build_table()


# Shared with the SSE stream (frontends.conversation_events); the names stay for the tests.
_load_stored = subscription.load_stored
_snapshot = subscription.snapshot


class GatewayConsumer(AsyncWebsocketConsumer):
    tenant: str
    user_id: str
    conn_id: str
    # No channel-layer channel per connection: events come through the hub.
    channel_layer_alias = "aiim.no-channel-per-connection"
    # Messages taken from Daphne's queue for a run and not handled yet (see _flow_control).
    _inbound_held: int = 0
    # A queued message `_take_run` counted against the rate limit and that was refused: the
    # ordinary path answers it with that refusal instead of counting it a second time.
    _refused: tuple[dict, BaseException] | None = None

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Lengths of this connection's latest runs (see _take_run).
        self._recent_runs: deque[int] = deque(maxlen=RECENT_RUNS)

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except Exception as exc:
            # The channel layer (Redis) can fail before any handler runs (pub/sub subscribes
            # the connection's own channel first) or while it runs. Release what the
            # connection holds, make sure the handshake completed, and let the error end the
            # application: Daphne then closes with 1011 (it refuses 1011 from `send`).
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
        else:
            await super().dispatch(message)

    # -- connection lifecycle ---------------------------------------------------------

    async def connect(self) -> None:
        self.principal = None
        self.subscriptions: dict[str, delivery.OrderedDelivery] = {}
        self._after_reply: list[Any] = []
        self._background: set[asyncio.Task] = set()
        self._recent_personal: OrderedDict[str, None] = OrderedDict()
        self._strikes: deque[float] = deque()
        self._watchdog: asyncio.Task | None = None
        self._closing = False
        self._protocol = backpressure.protocol_of(self.base_send)
        self._transport = getattr(self._protocol, "transport", None)
        self._reading_paused = False
        self._direct = self._transport is not None and hasattr(self._protocol, "sendMessage")
        self._outbox: deque[str] = deque()
        self._writer: asyncio.Task | None = None
        self._hub = get_hub()
        self._busy = 0
        self._deferred: deque[tuple[dict, Wire]] = deque()
        # Set while the hub's pass hands this connection an event (see hub_event).
        self._wire: Wire | None = None
        self._hub_sent = 0
        # Every log line of this connection carries its id. Daphne runs each connection in
        # its own task, so the context variable set here is this connection's alone, and the
        # tasks and worker threads it starts inherit it.
        self.conn_id = uuid.uuid4().hex
        conn_id_var.set(self.conn_id)
        await self.accept("bearer" if self.scope.get("bearer_subprotocol") else None)
        self._accepted = True
        principal = self.scope.get("principal")
        if principal is None or (principal.expires_at is not None and principal.expires_at <= time.time()):
            err = self.scope.get("auth_error")
            logger.info("ws auth refused: %s", err.code if err else "token_expired")
            await self.close(CLOSE_UNAUTHORIZED)
            return
        self.tenant, self.user_id = principal.tenant, principal.user_id
        self._user_group = events.user_group(self.tenant, self.user_id)
        try:
            await self._hub.join(self._user_group, self)
        except Exception as exc:
            if as_aiim_error(exc) is None:
                raise
            logger.warning("ws connect: channel layer unavailable: %s", type(exc).__name__)
            await self.close(CLOSE_SERVER_ERROR)
            return
        self.principal = principal
        WS_CONNECTIONS.inc()
        now = time.monotonic()
        self._last_frame_at = self._last_ping_at = now
        self._presence_renewed_at = 0.0
        await self._renew_presence(now)
        self._watchdog = asyncio.create_task(self._watch())

    async def disconnect(self, code: int) -> None:
        if self.principal is None:
            return
        self.principal = None
        WS_CONNECTIONS.dec()
        if self._watchdog is not None and self._watchdog is not asyncio.current_task():
            self._watchdog.cancel()
        for task in self._background:
            task.cancel()
        groups = [self._user_group]
        for conversation_id, sub in self.subscriptions.items():
            sub.close()
            groups.append(events.conversation_group(self.tenant, conversation_id))
        self.subscriptions.clear()
        self._deferred.clear()
        try:
            for group in groups:
                await self._hub.leave(group, self)
            await presence.release(tenant=self.tenant, user_id=self.user_id, conn_id=self.conn_id)
        except Exception as exc:  # the lease expires on its own; the group entry too
            logger.warning("ws disconnect cleanup failed: %s", type(exc).__name__)

    async def _watch(self) -> None:
        """Server pings after WS_PING_INTERVAL of client silence, 4408 after
        WS_IDLE_TIMEOUT of it, 4401 when the token expires."""
        ping_every, idle_timeout = settings.WS_PING_INTERVAL, settings.WS_IDLE_TIMEOUT
        expires_at = self.principal.expires_at
        while not self._closing:
            now = time.monotonic()
            if expires_at is not None and time.time() >= expires_at:
                await self._close(CLOSE_UNAUTHORIZED)
                return
            if now - self._last_frame_at >= idle_timeout:
                await self._close(CLOSE_IDLE)
                return
            next_ping = max(self._last_frame_at, self._last_ping_at) + ping_every
            if now >= next_ping:
                self._last_ping_at = now
                await self._send_text('{"type":"ping"}', "ping")
                next_ping = now + ping_every
            wake = min(next_ping, self._last_frame_at + idle_timeout)
            if expires_at is not None:
                wake = min(wake, now + max(0.0, expires_at - time.time()))
            await asyncio.sleep(max(0.01, wake - now))

    async def _close(self, code: int) -> None:
        """Close from the server side; frames and events still in flight are ignored."""
        self._closing = True
        if self._writer is not None:  # what was already emitted goes out before the close
            await asyncio.shield(self._writer)
        await self.close(code)

    async def _renew_presence(self, now: float) -> None:
        if now - self._presence_renewed_at < presence.renew_interval():
            return
        self._presence_renewed_at = now
        try:
            await presence.renew(tenant=self.tenant, user_id=self.user_id, conn_id=self.conn_id)
        except Exception as exc:  # presence is advisory; messaging goes on without it
            logger.warning("presence renew failed: %s", type(exc).__name__)

    # -- client frames ----------------------------------------------------------------

    async def websocket_receive(self, message: dict) -> None:
        # A run (see _take_run) may take the next message from Daphne's queue without
        # batching it: it is handled here, in order, before Channels' loop gets another.
        pending: deque[dict] = deque()
        await self._receive_frame(message, pending)
        while pending:
            message = pending.popleft()
            self._inbound_held -= 1
            if message["type"] == "websocket.receive":
                await self._receive_frame(message, pending)
            else:  # websocket.disconnect
                await super().dispatch(message)

    async def _receive_frame(self, message: dict, pending: deque[dict]) -> None:
        self._flow_control()
        if self.principal is None or self._closing:
            return
        await self._touch()
        frame: Any = None
        try:
            frame = self._decode(message)
            spec = self._spec(frame)
            self._check_required(frame, spec.required)
        except Exception as exc:
            await self._send_error(exc, frame if isinstance(frame, dict) else None)
            return
        if spec.batch is None:
            await self._handle(frame, spec)
            return
        refused, self._refused = self._refused, None
        try:
            if refused is not None and refused[0] is message:
                # Counted (and refused) when a run took it from the queue: it is not
                # counted again, or one refusal would count twice against the window.
                raise refused[1]
            await self._admit(spec)
        except Exception as exc:
            await self._send_error(exc, frame)
            return
        run = await self._take_run(frame, spec, pending)
        if len(run) > 1:
            await self._handle_run(spec, run)
        else:
            await self._handle(frame, spec, admitted=True)

    async def _touch(self) -> None:
        now = time.monotonic()
        self._last_frame_at = now
        await self._renew_presence(now)

    async def _admit(self, spec: FrameSpec) -> None:
        """What a frame passes before its handler: the rate limit, then fan-out lag."""
        if spec.rate_limited:
            await ratelimit.acheck(self.tenant, self.user_id)
        if spec.waits_for_fanout:
            await fanout_lag.LAG.wait()

    async def _handle(self, frame: dict, spec: FrameSpec, *, admitted: bool = False) -> None:
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
            await self._reply(frame, reply)
        for step in after:
            await step()

    async def _reply(self, frame: dict, reply: dict) -> None:
        if isinstance(frame.get("req_id"), str):
            reply["req_id"] = frame["req_id"]
        await self._send_text(orjson.dumps(reply).decode(), reply.get("type", "reply"))

    # -- runs of queued frames (FrameSpec.batch) ----------------------------------------

    async def _take_run(self, frame: dict, spec: FrameSpec, pending: deque[dict]) -> list[dict]:
        """`frame` and the frames queued right behind it that `spec.batch` may take with it:
        same type, required fields present, equal `batch_key` fields. The first queued message
        that does not fit is left in `pending` (handled next, in order). Under a server other
        than Daphne (the test communicator) there is no queue to look at: the run is `frame`."""
        queue = backpressure.inbound_queue(self._protocol)
        run = [frame]
        if queue is None:
            return run
        key = [frame.get(name) for name in spec.batch_key]
        pipelined = not queue.empty()
        if not pipelined and not pending:
            # The frames a client sends back to back may already be in the socket buffer:
            # Twisted reads them in a callback of a later loop turn (the first turn polls
            # the socket, the second runs the read). Waiting those two turns lets them join
            # this run instead of each paying a transaction of its own; without it a
            # stream with 4 acks outstanding can settle into runs of 1 and 3 and lose a
            # third of its rate (bench/RESULTS.md, session 5).
            for _ in range(2):
                await asyncio.sleep(0)
        while len(run) < MAX_RUN and not pending:
            try:
                message = queue.get_nowait()
            except asyncio.QueueEmpty:
                if not pipelined or len(run) >= max(self._recent_runs, default=0):
                    break
                # Frames were already waiting when this run began and it is shorter than
                # the client's recent runs: its window is split over two runs, and the
                # frames it sends for the acks just written are on their way. Waiting
                # briefly for them merges the halves again; otherwise the split persists
                # (runs of 2 and 2 under a window of 4 cost twice the transactions and
                # events of runs of 4: bench/RESULTS.md, session 6).
                pipelined = False
                try:
                    message = await asyncio.wait_for(queue.get(), RUN_LINGER)
                except TimeoutError:
                    break
            if not await self._join_run(message, frame, key, spec, run, pending):
                break
        self._recent_runs.append(len(run))
        return run

    async def _join_run(
        self, message: dict, frame: dict, key: list, spec: FrameSpec, run: list[dict], pending: deque[dict]
    ) -> bool:
        """Add a queued message to `run` if it fits; otherwise leave it in `pending`."""
        self._inbound_held += 1
        queued = self._peek(message)
        if (
            queued is None
            or queued.get("type") != frame["type"]
            or [queued.get(name) for name in spec.batch_key] != key
            or not self._has_required(queued, spec)
        ):
            pending.append(message)
            return False
        if spec.rate_limited:
            # Each frame of a run counts against the limit as it would alone; one that
            # is over it ends the run and gets its error on the ordinary path.
            try:
                await ratelimit.acheck(self.tenant, self.user_id)
            except Exception as exc:
                self._refused = (message, exc)
                pending.append(message)
                return False
        # What the ordinary path does for every frame before its handler runs.
        self._flow_control()
        await self._touch()
        self._spec(queued)  # counts it in WS_FRAMES_IN
        run.append(queued)
        return True

    async def _handle_run(self, spec: FrameSpec, run: list[dict]) -> None:
        """Each frame of the run gets its reply (or error) in order: a prefix through
        `spec.batch` (its replies sent after it returns, so an ack follows its commit), the
        first frame it left through the ordinary handler, then the rest the same way again."""
        taken = len(run) - 1  # all but the first came from Daphne's queue
        try:
            while run:
                try:
                    replies = await spec.batch(self, run) if len(run) > 1 else []
                except Exception as exc:  # nothing was applied: the ordinary path answers each frame
                    logger.info("ws batch refused, one frame at a time: %s", type(exc).__name__)
                    replies = []
                for frame, reply in zip(run, replies):
                    if self.principal is not None and not self._closing:
                        await self._reply(frame, reply)
                run = run[len(replies):]
                if run:
                    frame = run.pop(0)
                    if self.principal is not None and not self._closing:
                        await self._handle(frame, spec, admitted=True)
        finally:
            self._inbound_held -= taken
        self._flow_control()  # the run may have emptied the queue: resume reading if paused

    @classmethod
    def _peek(cls, message: dict) -> dict | None:
        """A queued message decoded as a frame, or None if it is not a valid one (no metric
        counted, no error sent: the ordinary path does that when it handles it)."""
        if message.get("type") != "websocket.receive":
            return None
        try:
            return cls._decode(message)
        except AiimError:
            return None

    @classmethod
    def _has_required(cls, frame: dict, spec: FrameSpec) -> bool:
        try:
            cls._check_required(frame, spec.required)
        except Invalid:
            return False
        return True

    def _flow_control(self) -> None:
        """Stop reading a client whose frames queue up faster than they are handled, until
        the queue is short again: TCP then slows the client down, instead of its backlog
        growing in memory and its parsing taking the loop from everyone else. The backlog
        counts the frames still in Daphne's queue and those taken from it for a run that
        are not answered yet."""
        backlog = backpressure.inbound_backlog(self._protocol) + self._inbound_held
        if not self._reading_paused and backlog > INBOUND_HIGH_WATER:
            self._transport.pauseProducing()
            self._reading_paused = True
        elif self._reading_paused and backlog <= INBOUND_LOW_WATER:
            self._transport.resumeProducing()
            self._reading_paused = False

    @staticmethod
    def _decode(message: dict) -> dict:
        text = message.get("text")
        if text is None:
            raise Invalid("Frames must be JSON text, not binary.")
        if len(text) > settings.MAX_MESSAGE_BYTES + FRAME_OVERHEAD:
            raise TooLarge(f"Frame is over {settings.MAX_MESSAGE_BYTES + FRAME_OVERHEAD} characters.")
        try:
            frame = orjson.loads(text)
        except orjson.JSONDecodeError:
            raise Invalid("Frame is not valid JSON.") from None
        if not isinstance(frame, dict):
            raise Invalid("Frame must be a JSON object.")
        return frame

    @staticmethod
    def _spec(frame: dict) -> FrameSpec:
        frame_type = frame.get("type")
        if isinstance(frame_type, str) and frame_type in FRAMES:
            WS_FRAMES_IN.labels(frame_type).inc()
            return FRAMES[frame_type]
        WS_FRAMES_IN.labels("unknown").inc()
        raise Invalid(f"Unknown frame type {frame_type!r}." if isinstance(frame_type, str) else "Frame has no 'type'.")

    @staticmethod
    def _check_required(frame: dict, required: dict[str, type | tuple[type, ...]]) -> None:
        errors: dict[str, list[str]] = {}
        for name, expected in required.items():
            if name not in frame:
                errors[name] = ["This field is required."]
                continue
            value = frame[name]
            kinds = expected if isinstance(expected, tuple) else (expected,)
            # bool is an int in Python, never in a frame.
            if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds and object not in kinds):
                names = " or ".join(k.__name__ for k in kinds)
                errors[name] = [f"Expected {names}."]
            elif isinstance(value, str) and not value and object not in kinds:
                errors[name] = ["May not be empty."]
        if errors:
            raise Invalid(f"Invalid fields: {', '.join(sorted(errors))}.", errors=errors)

    async def _send_error(self, exc: BaseException, frame: dict | None) -> None:
        err = as_aiim_error(exc)
        if err is None:
            logger.exception("ws frame handler failed (type=%s)", frame.get("type") if frame else None)
            err = AiimError("Server error.")
            err.code = "server_error"
        body: dict[str, Any] = {**err.extra, "type": "error", "code": err.code, "message": err.detail}
        if err.errors:
            body["errors"] = err.errors
        if frame is not None:
            if isinstance(frame.get("req_id"), str):
                body["req_id"] = frame["req_id"]
            if isinstance(frame.get("conversation_id"), str):
                body["conversation_id"] = frame["conversation_id"]
        ERRORS.labels(err.code, "ws").inc()
        await self._send_text(orjson.dumps(body).decode(), "error")
        if isinstance(err, RateLimited):
            await self._count_strike()

    async def _count_strike(self) -> None:
        now = time.monotonic()
        self._strikes.append(now)
        while self._strikes and now - self._strikes[0] > FLOOD_WINDOW:
            self._strikes.popleft()
        if len(self._strikes) > FLOOD_STRIKES:
            logger.info("ws closed for flooding")
            await self._close(CLOSE_FLOOD)

    async def _send_text(self, text: str, kind: str) -> None:
        WS_FRAMES_OUT.labels(kind).inc()
        self._emit(text)

    def _emit(self, text: str, wire: Wire | None = None) -> bool:
        """Hand one frame to the socket, after every frame emitted before it."""
        if self._direct:
            protocol = self._protocol
            if protocol.state != protocol.STATE_OPEN:
                return False
            if protocol._perMessageCompress is None and not protocol.send_queue and protocol.send_state == protocol.SEND_STATE_GROUND:
                backpressure.write_now(self._transport, wire.frame_bytes() if wire is not None else text_frame(text.encode()))
            else:  # autobahn has a frame of its own in progress: queue behind it
                protocol.sendMessage(text.encode(), False)
            # Nothing it missed is lost (the database has it: it resumes with since_seq), so
            # a client that does not read is cut off instead of held in server memory.
            if not self._closing and backpressure.buffered_bytes(self._transport) > settings.WS_SEND_BUFFER_BYTES:
                logger.warning("ws closed: client not reading, send buffer over %d bytes", settings.WS_SEND_BUFFER_BYTES)
                WS_SLOW_CONSUMERS.inc()
                self._closing = True
                self._spawn(self._close(CLOSE_SLOW_CONSUMER))
            return True
        self._outbox.append(text)
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_outbox())
        return True

    async def _write_outbox(self) -> None:
        try:
            while self._outbox:
                await self.base_send({"type": "websocket.send", "text": self._outbox.popleft()})
        finally:
            self._writer = None

    def _emit_event(self, text: str) -> None:
        in_hub = self._wire is not None
        if self._emit(text, self._wire if in_hub and self._wire.text is text else None):
            if in_hub:  # counted by the hub, once per event
                self._hub_sent += 1
            else:
                FRAMES_OUT_EVENT.inc()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- subscriptions (the Connection interface of messaging.frames) -----------------

    def is_subscribed(self, conversation_id: str) -> bool:
        return conversation_id in self.subscriptions

    async def rate_limit(self) -> None:
        await ratelimit.acheck(self.tenant, self.user_id)

    async def subscribe(self, conversation_id: str, since_seq: int | None) -> dict[str, Any]:
        opened = await subscription.open_subscription(
            hub=self._hub,
            member=self,
            tenant=self.tenant,
            user_id=self.user_id,
            conversation_id=conversation_id,
            since_seq=since_seq,
            send=self._emit_event,
            on_revoked=partial(self._revoked, conversation_id),
            leave_on_failure=conversation_id not in self.subscriptions,
        )
        sub = opened.sub
        old = self.subscriptions.pop(conversation_id, None)
        if old is not None:
            old.close()
        self.subscriptions[conversation_id] = sub
        # Order on the wire: `subscribed` first, then the replay, then live events.
        self._after_reply.append(partial(self._start, sub, opened.replay, opened.last_seq))
        reply: dict[str, Any] = {"type": "subscribed", "conversation_id": conversation_id, "last_seq": opened.last_seq}
        if not opened.recovered:
            reply["recovered"] = False
        return reply

    async def _start(self, sub: delivery.OrderedDelivery, replay: list[delivery.StoredMessage], last_seq: int) -> None:
        await subscription.start(sub, replay, last_seq)
        self._spawn(subscription.check_tail_later(sub))

    async def _revoked(self, conversation_id: str) -> None:
        """A read found this user is no longer a member: end the subscription and say so."""
        sub = self.subscriptions.pop(conversation_id, None)
        if sub is None:
            return
        sub.close()
        await self._hub.leave(events.conversation_group(self.tenant, conversation_id), self)
        body = {"type": "error", "code": "forbidden", "message": "You are no longer a member of this conversation.", "conversation_id": conversation_id}
        await self._send_text(orjson.dumps(body).decode(), "error")

    async def unsubscribe(self, conversation_id: str) -> None:
        sub = self.subscriptions.pop(conversation_id, None)
        if sub is None:
            raise NotFound("Not subscribed to this conversation.")
        sub.close()
        await self._hub.leave(events.conversation_group(self.tenant, conversation_id), self)

    # -- events, from the hub -------------------------------------------------------

    def hub_event(self, message: dict, wire: Wire) -> int:
        """Hand one event to this connection; returns how many frames it sent now."""
        if self.principal is None or self._closing:
            return 0
        if self._busy:
            self._deferred.append((message, wire))
            return 0
        conversation_id = message["conversation_id"]
        if message.get("seq") is None:
            about = message.get("user_id")
            if about is None:  # a writer that sets no route field: the data names the user
                about = orjson.loads(message["frame"])["data"].get("user_id")
            if about == self.user_id:
                return self._personal_event(conversation_id, message, wire)
        sub = self.subscriptions.get(conversation_id)
        if sub is None:
            return 0
        self._wire, self._hub_sent = wire, 0
        try:
            sub.offer(message)
        finally:
            self._wire = None
        return self._hub_sent

    def _take_deferred(self) -> None:
        sent = 0
        while self._deferred and not self._busy:
            sent += self.hub_event(*self._deferred.popleft())
        if sent:
            FRAMES_OUT_EVENT.inc(sent)

    def hub_resync(self) -> None:
        """The channel layer lost Redis and is subscribed again: whatever was published
        meanwhile is gone, so every subscription re-reads its tail from the database."""
        if self.principal is None or self._closing:
            return
        for sub in self.subscriptions.values():
            self._spawn(subscription.check_tail_later(sub))

    def _personal_event(self, conversation_id: str, message: dict, wire: Wire) -> int:
        """An event about this user: it may come twice (conversation and user group), and
        it reaches this connection whether or not it is subscribed."""
        if message["event"] == "typing":  # the typist's own devices do not need it
            return 0
        frame = message["frame"]
        if frame in self._recent_personal:
            return 0
        self._recent_personal[frame] = None
        if len(self._recent_personal) > RECENT_PERSONAL:
            self._recent_personal.popitem(last=False)
        if message["event"] == "member.left":
            sub = self.subscriptions.pop(conversation_id, None)
            if sub is not None:
                sub.close()
                self._hub.leave_soon(events.conversation_group(self.tenant, conversation_id), self)
        return 1 if self._emit(frame, wire) else 0
