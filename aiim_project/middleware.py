"""X-Request-ID: accept the caller's id (or make one), echo it, and log one line per request. The
id lives in a context variable, so every log line of the request carries it (`core.logs`).
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

from aiim_project.core.logs import request_id_var

logger = logging.getLogger("aiim.request")

HEADER = "X-Request-ID"
# A client-chosen id is echoed into headers and logs: accept only short, plain tokens.
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Probes and scrapes would drown the request log at INFO.
_QUIET_PATHS = ("/health", "/health/live", "/metrics")


def request_id_for(request) -> str:
    return request_id_from(request.headers.get(HEADER, ""))


def request_id_from(given: str) -> str:
    return given if _VALID_ID.match(given) else uuid.uuid4().hex


def log_request(method: str, path: str, status: int, started: float) -> None:
    """The one `aiim.request` line per request (also written by aiim_project.rest_direct)."""
    # The path only: a query string may carry a token (`?token=` on the WebSocket URL).
    logger.log(
        logging.DEBUG if path in _QUIET_PATHS else logging.INFO,
        "%s %s %s",
        method,
        path,
        status,
        extra={"method": method, "path": path, "status": status, "duration_ms": round((time.perf_counter() - started) * 1000, 2)},
    )


class RequestIdMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request):
        if iscoroutinefunction(self):
            return self._acall(request)
        token, started = self._start(request)
        try:
            response = self.get_response(request)
            self._finish(request, response, started)
            return response
        finally:
            request_id_var.reset(token)

    async def _acall(self, request):
        token, started = self._start(request)
        try:
            response = await self.get_response(request)
            self._finish(request, response, started)
            return response
        finally:
            request_id_var.reset(token)

    def _start(self, request):
        request.request_id = request_id_for(request)
        return request_id_var.set(request.request_id), time.perf_counter()

    def _finish(self, request, response, started: float) -> None:
        response[HEADER] = request.request_id
        log_request(request.method, request.path, response.status_code, started)
