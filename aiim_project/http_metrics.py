"""The original AIIM's `http_requests_total{method,path,status}` and
`http_request_duration_seconds{method,path}` (declared in aiim_project.core.metrics).

In `MIDDLEWARE`, so both chains count: the REST API's (aiim_project.compat.django builds it
from `API_MIDDLEWARE`, a subset) and Django's own (health, metrics, docs, admin). Sync-only,
like its neighbours, so it runs in their thread block without a hop of its own
(aiim_project.sync_middleware).

`path` is the matched route as a template: bounded by the URLconf, whatever ids clients send.
"""

from __future__ import annotations

import re
import time
from functools import lru_cache

from django.contrib.admindocs.views import simplify_regex

from aiim_project.core.metrics import HTTP_REQUEST_SECONDS, HTTP_REQUESTS
from aiim_project.errors import json_404

UNMATCHED = "<unmatched>"
# Any token is a valid HTTP method: the rest are one label value, so a client cannot make series.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Django's `<name>` / `<converter:name>` as the original's (FastAPI's) `{name}`.
_PARAM = re.compile(r"<(?:\w+:)?(\w+)>")


@lru_cache(maxsize=512)  # one entry per route of the URLconf
def route_template(route: str) -> str:
    """`api/aiim/messages/(?P<conversation_id>[^/]+)/?$` -> `/api/aiim/messages/{conversation_id}`."""
    template = _PARAM.sub(r"{\1}", simplify_regex(route))
    return template.rstrip("/") or "/"


def template_of(request) -> str:
    match = getattr(request, "resolver_match", None)
    if match is None or match.func is json_404:
        return UNMATCHED
    return route_template(match.route)


@lru_cache(maxsize=4096)  # bounded: methods x routes x statuses
def series(method: str, path: str, status: int):
    """The labelled children, looked up once: `labels()` costs ~10x an `inc()`."""
    return HTTP_REQUESTS.labels(method, path, str(status)), HTTP_REQUEST_SECONDS.labels(method, path)


class HttpMetricsMiddleware:
    sync_capable = True
    async_capable = False

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        method = request.method if request.method in METHODS else "other"
        requests, seconds = series(method, template_of(request), response.status_code)
        seconds.observe(time.perf_counter() - started)
        requests.inc()
        return response
