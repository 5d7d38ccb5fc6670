"""An SSE client that stops reading is cut off like a slow WebSocket consumer: once its unsent
bytes pass WS_SEND_BUFFER_BYTES the server aborts the connection instead of buffering more.
A reading client of the same conversation gets everything."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from aiim_project.core.auth import mint_token
from tests.support.sse import open_sse, post_message

pytestmark = pytest.mark.e2e

CONTENT = "x" * 50_000
MESSAGES = 200  # 10 MB of events: more than the kernel buffers on loopback take, against a 256 KiB buffer


def stalled_reader(port: int, path: str) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode())
    return sock


def drain(sock: socket.socket, timeout: float = 10.0) -> tuple[int, bool]:
    """(bytes read, whether the server ended the connection) once nothing more comes."""
    total, deadline = 0, time.monotonic() + timeout
    sock.settimeout(1.0)
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(1 << 16)
        except TimeoutError:
            return total, False
        except ConnectionResetError:
            return total, True
        if not chunk:
            return total, True
        total += len(chunk)
    return total, False


def test_a_client_that_stops_reading_is_cut_off(daphne, make_conversation):
    server = daphne(1, WS_SEND_BUFFER_BYTES=str(256 * 1024))[0]
    conversation = make_conversation("alice", ("bob", "carol"))
    path = f"/api/aiim/conversations/{conversation.id}/events?token={mint_token(user_id='bob')}"
    stalled = stalled_reader(server.port, path)
    reader = open_sse(server, f"/api/aiim/conversations/{conversation.id}/events", token=mint_token(user_id="carol"))
    assert reader.next().name == "subscribed"
    time.sleep(0.3)
    seqs: list[int] = []

    def read() -> None:
        while len(seqs) < MESSAGES:
            event = reader.next(30)
            if event is None:
                return
            if event.name == "message.created":
                seqs.append(event.json()["message"]["seq"])

    reading = threading.Thread(target=read)
    reading.start()
    alice = mint_token(user_id="alice")
    for _ in range(MESSAGES):
        post_message(server, alice, conversation.id, CONTENT)
    reading.join(60)
    # The reading client gets every event.
    assert seqs == list(range(1, MESSAGES + 1))
    reader.close()
    # The stalled one was cut off well before everything was sent.
    read, ended = drain(stalled)
    assert ended, "the server kept the stalled connection open"
    assert read < MESSAGES * len(CONTENT) / 2
    server.stop()
    assert "http stream cut off: client not reading" in server.log_path.read_text()
