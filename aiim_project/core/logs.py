"""Log formatting: one JSON object per line in production, readable text in development. Each
line carries its request or connection id (context variables set by the request-id middleware
and the gateway); keys naming secrets or message contents are redacted, whatever the `extra=`.
"""

from __future__ import annotations

import contextvars
import logging
import re

import orjson
from django.http import HttpRequest

_RESERVED = set(vars(logging.makeLogRecord({})))

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("aiim_request_id", default="")
conn_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("aiim_conn_id", default="")

_SENSITIVE_KEY = re.compile(r"token|authorization|password|secret|cookie|content|chunk|delta", re.IGNORECASE)
REDACTED = "[redacted]"
_TOKEN_PARAM = re.compile(r"([?&](?:access_)?token=)[^&#\s]*", re.IGNORECASE)


def redact_query_tokens(path: str) -> str:
    """A path with the value of every `token` query parameter printed as `[redacted]` (the GET
    stream endpoints and the WebSocket take `?token=<JWT>`: browsers cannot send headers)."""
    return _TOKEN_PARAM.sub(lambda m: m.group(1) + REDACTED, path)


class ContextFilter(logging.Filter):
    """Stamps each record with the current request id and connection id ("" outside one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", ""):
            record.request_id = request_id_var.get()
        if not getattr(record, "conn_id", ""):
            record.conn_id = conn_id_var.get()
        return True


def _clean(key: str, value):
    if _SENSITIVE_KEY.search(key):
        return REDACTED
    if isinstance(value, HttpRequest):
        # Django attaches the request to its own error lines; its repr shows the query
        # string, where a WebSocket-style `?token=` would leak.
        return f"{value.method} {value.path}"
    return value


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        # Fields passed with `extra=` (request_id, conn_id, ...) become top-level keys;
        # empty context ids are left out rather than logged as "".
        for key, value in vars(record).items():
            if key not in _RESERVED and key not in entry and value != "":
                entry[key] = _clean(key, value)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()
