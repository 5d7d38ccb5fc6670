"""Tools only the reliability suite drives real processes with: a TCP proxy that can cut
PostgreSQL away from Daphne, clients that stall or resume across faults, load and measurement
helpers. The shared ones (free_port, RedisServer, http, WebSocket client) live in tests/support/.

Nothing here mocks a dependency: faults are produced by killing or cutting real sockets.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import threading
import time
from collections.abc import Iterable

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from tests.support.http import http
from tests.support.ports import free_port
from tests.support.websocket import ws_open, ws_recv, ws_request

# --- a TCP proxy we can cut -------------------------------------------------------------


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target, in its own thread and event loop.

    `cut()` drops every open connection and closes each new one at once (the port stays
    ours), which is what clients see when the database host dies; `restore()` forwards
    again. Nothing is faked: the clients talk to the real server through real sockets.
    """

    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self.port = free_port()
        self._cut = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tcp-proxy", daemon=True)
        self._thread.start()
        self._ready.wait(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.port))
        self._ready.set()
        self._loop.run_forever()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self._writers.discard(writer)
            self._writers.discard(up_writer)

    def _abort_all(self) -> None:
        self._cut = True
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    def cut(self) -> None:
        self._loop.call_soon_threadsafe(self._abort_all)
        time.sleep(0.1)

    def restore(self) -> None:
        self._cut = False

    async def _shutdown(self) -> None:
        self._server.close()
        self._abort_all()
        # Aborted transports close their sockets on the next loop iterations: let them, or
        # the database keeps the sessions behind them open.
        await asyncio.sleep(0.2)
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


def created_seqs(frames: Iterable[dict], conversation_id: str) -> list[int]:
    return [
        f["data"]["message"]["seq"]
        for f in frames
        if f.get("type") == "event"
        and f["data"].get("event") == "message.created"
        and f["data"].get("conversation_id") == conversation_id
    ]


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def open_sockets(pid: int) -> int:
    return sum(1 for fd in os.listdir(f"/proc/{pid}/fd") if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"))


class StalledClient:
    """A WebSocket client on a raw socket with a tiny receive buffer that stops reading
    after its handshake and first frames: the slow consumer the server must cut off."""

    def __init__(self, port: int, token: str, rcvbuf: int = 4096):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET /api/aiim/ws?token={token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        self._buf = b""
        while b"\r\n\r\n" not in self._buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("handshake refused")
            self._buf += chunk
        head, self._buf = self._buf.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(head.decode(errors="replace"))

    def send(self, frame: dict) -> None:
        payload = json.dumps(frame).encode()
        mask = os.urandom(4)
        header = bytearray([0x81])
        if len(payload) < 126:
            header.append(0x80 | len(payload))
        else:
            header.append(0x80 | 126)
            header += len(payload).to_bytes(2, "big")
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes(header) + mask + masked)

    def _read_exact(self, n: int, deadline: float) -> bytes:
        while len(self._buf) < n:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self._buf += chunk
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def read_frame(self, timeout: float = 10.0) -> tuple[int, bytes]:
        """(opcode, payload) of the next server frame."""
        deadline = time.monotonic() + timeout
        b0, b1 = self._read_exact(2, deadline)
        length = b1 & 0x7F
        if length == 126:
            length = int.from_bytes(self._read_exact(2, deadline), "big")
        elif length == 127:
            length = int.from_bytes(self._read_exact(8, deadline), "big")
        return b0 & 0x0F, self._read_exact(length, deadline)

    def drain_until_closed(self, timeout: float = 30.0) -> tuple[str, int | None, int]:
        """Read everything left: ("close", code, frames) for a close frame, ("eof" |
        "reset", None, frames) when the server dropped the socket, ("open", None, frames)
        when it is still open at the timeout."""
        frames, deadline = 0, time.monotonic() + timeout
        while True:
            try:
                opcode, payload = self.read_frame(max(0.01, deadline - time.monotonic()))
            except EOFError:
                return "eof", None, frames
            except ConnectionResetError:
                return "reset", None, frames
            except TimeoutError:
                return "open", None, frames
            if opcode == 0x8:
                return "close", int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None, frames
            frames += 1

    def close(self) -> None:
        self.sock.close()


class ResumingSubscriber:
    """A client that stays subscribed to one conversation across faults: when its
    connection is lost it reconnects (to the next server of its list) and resumes with
    `since_seq` = the last seq it got. Records the seqs of every `message.created`, and any
    that arrives out of order or twice."""

    def __init__(self, servers: list, token: str, conversation_id: str):
        self.servers, self.token, self.conversation_id = list(servers), token, conversation_id
        self.seqs: list[int] = []
        self.violations: list[tuple[int, int]] = []
        self.reconnects = 0
        self.refusals: list[dict] = []

    @property
    def last(self) -> int:
        return self.seqs[-1] if self.seqs else 0

    async def run(self, stop: asyncio.Event) -> None:
        turn = 0
        while not stop.is_set():
            server = self.servers[turn % len(self.servers)]
            turn += 1
            try:
                ws = await ws_open(server.ws_url, self.token, open_timeout=3)
            except (OSError, TimeoutError, ConnectionClosed, InvalidHandshake):
                await asyncio.sleep(0.1)
                continue
            try:
                await self._follow(ws, stop)
            except (OSError, TimeoutError, ConnectionClosed):
                pass
            finally:
                await ws.close()
            if not stop.is_set():
                self.reconnects += 1
                await asyncio.sleep(0.05)

    async def _follow(self, ws: ClientConnection, stop: asyncio.Event) -> None:
        reply = await ws_request(ws, {"type": "subscribe", "conversation_id": self.conversation_id, "since_seq": self.last}, timeout=5)
        if reply["type"] != "subscribed":
            self.refusals.append(reply)
            await asyncio.sleep(0.2)
            return
        while not stop.is_set():
            try:
                frame = await ws_recv(ws, 0.5)
            except TimeoutError:
                continue
            for seq in created_seqs([frame], self.conversation_id):
                if seq <= self.last:
                    self.violations.append((self.last, seq))
                else:
                    self.seqs.append(seq)

    async def wait_for(self, seqs: set[int], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if seqs <= set(self.seqs):
                return True
            await asyncio.sleep(0.1)
        return False


def production_env(jwt_secret: str) -> dict[str, str]:
    """Daphne env with DEBUG off, as in production: with DEBUG on Django keeps the text of
    recent SQL queries (message contents included), which swamps any memory measurement."""
    return {"DEBUG": "false", "SECRET_KEY": "reliability-" + "k" * 40, "JWT_SECRET": jwt_secret}


def metric_value(base_url: str, name: str) -> float:
    """Sum of a metric's samples on /metrics (0 when absent)."""
    text = http(base_url, "GET", "/metrics").body
    text = text.decode() if isinstance(text, bytes) else str(text)
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def churn(server, tokens: list[str], conversation_ids: list[str], cycles: int, concurrency: int = 50) -> list:
    """Each cycle: connect, subscribe (with since_seq: a replay), get the answer, close."""
    failures: list = []
    counter = iter(range(cycles))

    async def worker():
        for n in counter:
            try:
                ws = await ws_open(server.ws_url, tokens[n % len(tokens)])
                reply = await ws_request(ws, {"type": "subscribe", "conversation_id": conversation_ids[n % len(conversation_ids)], "since_seq": 0})
                if reply["type"] != "subscribed":
                    failures.append(reply)
                await ws.close()
            except Exception as exc:  # counted, not raised: the totals tell the story
                failures.append(repr(exc))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return failures
