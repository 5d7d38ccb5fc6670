"""HTTP requests to a running server, each on a fresh connection (a fault must not hide in
a kept-alive one). One implementation, two call shapes: `http` (base URL, path, token) gives
a `Reply`; `fetch` (full URL) gives a (status, headers, body) tuple."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from http.client import HTTPConnection, HTTPMessage
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Reply:
    status: int
    body: Any  # parsed JSON, else the text, None when empty
    headers: HTTPMessage  # case-insensitive
    elapsed: float


def http(base_url: str, method: str, path: str, token: str | None = None, body: Any = None, *, raw: bytes | None = None, timeout: float = 15.0, headers: dict[str, str] | None = None) -> Reply:
    parts = urlsplit(base_url)
    conn = HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    hdrs = dict(headers or {})
    if token is not None:
        hdrs["Authorization"] = f"Bearer {token}"
    payload = raw
    if body is not None:
        payload = json.dumps(body).encode()
    if payload is not None:
        hdrs.setdefault("Content-Type", "application/json")
    started = time.monotonic()
    try:
        conn.request(method, path, body=payload, headers=hdrs)
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    try:
        parsed = json.loads(data) if data else None
    except ValueError:
        parsed = data.decode(errors="replace")
    return Reply(resp.status, parsed, resp.msg, time.monotonic() - started)


async def ahttp(*args: Any, **kwargs: Any) -> Reply:
    return await asyncio.to_thread(http, *args, **kwargs)


def fetch(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None, timeout: float = 10) -> tuple[int, HTTPMessage, Any]:
    """(status, headers, parsed JSON or text) of a request to a full URL."""
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    reply = http(f"{parts.scheme}://{parts.netloc}", method, path, body=body, headers=headers, timeout=timeout)
    return reply.status, reply.headers, reply.body
