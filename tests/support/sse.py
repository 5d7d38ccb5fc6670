"""A real-socket SSE reader and REST helpers for the front-end stream tests (no mocks)."""

from __future__ import annotations

import http.client
import json
import time
from dataclasses import dataclass, field
from urllib.parse import urlencode

from tests.support.http import fetch as rest


@dataclass
class Event:
    id: str | None = None
    name: str | None = None
    data: str = ""
    comment: bool = False

    def json(self):
        return json.loads(self.data)


@dataclass
class SSE:
    """An open text/event-stream response, read event by event."""

    conn: http.client.HTTPConnection
    response: http.client.HTTPResponse
    status: int
    headers: dict[str, str]
    events: list[Event] = field(default_factory=list)

    def next(self, timeout: float = 10.0) -> Event | None:
        """The next event or comment, or None at the end of the stream."""
        self.conn.sock.settimeout(timeout)
        event, lines = Event(), 0
        while True:
            raw = self.response.readline()
            if not raw:
                return None
            line = raw.decode().rstrip("\n").rstrip("\r")
            if line == "":
                if lines:
                    self.events.append(event)
                    return event
                continue
            lines += 1
            if line.startswith(":"):
                event.comment = True
                event.data = line[1:].strip()
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                event.data = value if not event.data else event.data + "\n" + value
            elif name == "id":
                event.id = value
            elif name == "event":
                event.name = value

    def until(self, predicate, timeout: float = 15.0) -> list[Event]:
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            event = self.next(max(0.1, deadline - time.monotonic()))
            if event is None:
                raise AssertionError(f"stream ended before the predicate held; saw {[(e.name, e.data[:80]) for e in seen]}")
            seen.append(event)
            if predicate(event):
                return seen

    def rest(self, timeout: float = 15.0) -> list[Event]:
        """Every event to the end of the stream."""
        out = []
        while (event := self.next(timeout)) is not None:
            out.append(event)
        return out

    def close(self) -> None:
        self.conn.close()


def open_sse(server, path: str, *, token: str | None = None, query: dict | None = None, headers: dict | None = None) -> SSE:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    params = dict(query or {})
    if token is not None:
        params["token"] = token
    url = path + ("?" + urlencode(params) if params else "")
    # As EventSource and the AI SDK's fetch ask.
    conn.request("GET", url, headers={"Accept": "text/event-stream", **(headers or {})})
    response = conn.getresponse()
    return SSE(conn, response, response.status, {k.lower(): v for k, v in response.getheaders()})


def error_body(sse: SSE) -> dict:
    return json.loads(sse.response.read().decode())


def ui_parts(events: list[Event]) -> list:
    """The UI message stream parts (JSON objects, and "[DONE]"), comments left out."""
    return [e.data if e.data == "[DONE]" else e.json() for e in events if not e.comment]


def text_of(parts: list) -> str:
    return "".join(p["delta"] for p in parts if isinstance(p, dict) and p["type"] == "text-delta")


def post_chunk(server, token: str, conversation_id: str, client_msg_id: str, chunk: str, *, index: int | None = None,
               end: bool = False, abort: bool = False) -> dict:
    body = {"conversation_id": conversation_id, "client_msg_id": client_msg_id, "chunk": chunk, "stream_end": end}
    if index is not None:
        body["chunk_index"] = index
    if abort:
        body = {"conversation_id": conversation_id, "client_msg_id": client_msg_id, "chunk": "", "stream_abort": True}
    status, _, reply = rest("POST", f"{server.url}/api/aiim/messages/stream", body, {"Authorization": f"Bearer {token}"})
    assert status in (200, 201), (status, reply)
    return reply["message"]


def post_message(server, token: str, conversation_id: str, content: str) -> dict:
    status, _, reply = rest("POST", f"{server.url}/api/aiim/messages", {"conversation_id": conversation_id, "content": content},
                            {"Authorization": f"Bearer {token}"})
    assert status == 201, (status, reply)
    return reply["message"]


class ChunkPoster:
    """post_chunk over one kept-alive connection (hundreds of chunks without a TCP handshake each)."""

    def __init__(self, server, token: str, conversation_id: str, client_msg_id: str):
        self.conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.conversation_id, self.client_msg_id = conversation_id, client_msg_id

    def post(self, chunk: str, index: int, end: bool = False) -> dict:
        body = {"conversation_id": self.conversation_id, "client_msg_id": self.client_msg_id, "chunk": chunk,
                "chunk_index": index, "stream_end": end}
        self.conn.request("POST", "/api/aiim/messages/stream", json.dumps(body), self.headers)
        response = self.conn.getresponse()
        reply = json.loads(response.read())
        assert response.status in (200, 201), (response.status, reply)
        return reply["message"]

    def close(self) -> None:
        self.conn.close()
