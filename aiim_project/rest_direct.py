"""`POST /api/aiim/messages` without Django's request cycle (the direct lane): the API's most
frequent write skips the middleware chain, the URL resolver and DRF's dispatch, and answers
with the same status, body and headers (docs/architecture.md, "The direct lane").

Only the plain case takes the lane: a bearer token that verifies, a JSON body (or none named)
that parses and validates, no query string, no `Origin` (CORS), a JSON or any `Accept`, a
valid host. Anything else, and every refusal before the rate limit counts, goes to Django
with the body replayed, so errors and browser requests keep their one implementation.
"""

from __future__ import annotations

import json
import logging
import time
from functools import lru_cache
from http import HTTPStatus

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core import signals
from django.http.request import split_domain_port, validate_host
from django_prometheus.middleware import Metrics
from rest_framework.exceptions import ValidationError
from rest_framework.renderers import JSONRenderer
from rest_framework.utils.json import strict_constant

from aiim_project.core import ratelimit
from aiim_project.core.auth import decode_token
from aiim_project.core.checks import check_tenant
from aiim_project.core.errors import AiimError
from aiim_project.core.logs import request_id_var
from aiim_project.errors import error_parts
from aiim_project.http_metrics import series
from aiim_project.middleware import log_request, request_id_from
from messaging.serializers import parse_message_send
from messaging.views import post_message

PATHS = frozenset({"/api/aiim/messages", "/api/aiim/messages/"})
TEMPLATE = "/api/aiim/messages"
VIEW = "messages"  # the URL name django-prometheus labels the view with
_JSON_TYPES = frozenset({"", "application/json", "application/json; charset=utf-8", "application/json;charset=utf-8"})
_ANY_JSON_ACCEPT = frozenset({"", "*/*", "application/json"})
_renderer = JSONRenderer()
django_logger = logging.getLogger("django.request")


def enabled() -> bool:
    """Off when a setting would make Django's answer differ per request (HTTPS redirect, HSTS,
    forwarded hosts, refused user agents, www redirect): those requests need the chain."""
    return (
        settings.REST_DIRECT_POST
        and not settings.SECURE_SSL_REDIRECT
        and not settings.SECURE_HSTS_SECONDS
        and not settings.USE_X_FORWARDED_HOST
        and not settings.PREPEND_WWW
        and not settings.DISALLOWED_USER_AGENTS
        and settings.SECURE_PROXY_SSL_HEADER is None
    )


@lru_cache(maxsize=1)
def _static_headers() -> tuple[tuple[bytes, bytes], ...]:
    """What the chain adds to every such answer: DRF's Allow and Vary, CORS's Vary, the
    security and X-Frame-Options middleware's headers (aiim_project/tests/test_rest_direct.py
    compares them with the chain's)."""
    headers = [(b"Content-Type", b"application/json"), (b"Vary", b"Accept, origin"), (b"Allow", b"POST, OPTIONS")]
    if settings.X_FRAME_OPTIONS:
        headers.append((b"X-Frame-Options", settings.X_FRAME_OPTIONS.upper().encode()))
    if settings.SECURE_CONTENT_TYPE_NOSNIFF:
        headers.append((b"X-Content-Type-Options", b"nosniff"))
    if settings.SECURE_REFERRER_POLICY:
        policy = settings.SECURE_REFERRER_POLICY
        policy = policy if isinstance(policy, str) else ",".join(policy)
        headers.append((b"Referrer-Policy", policy.encode()))
    if settings.SECURE_CROSS_ORIGIN_OPENER_POLICY:
        headers.append((b"Cross-Origin-Opener-Policy", settings.SECURE_CROSS_ORIGIN_OPENER_POLICY.encode()))
    return tuple(headers)


@lru_cache(maxsize=1)
def _allowed_hosts() -> list[str]:
    hosts = settings.ALLOWED_HOSTS
    if settings.DEBUG and not hosts:
        hosts = [".localhost", "127.0.0.1", "[::1]"]
    return hosts


@lru_cache(maxsize=64)
def _host_ok(host: str) -> bool:
    domain, _ = split_domain_port(host)
    return bool(domain) and validate_host(domain, _allowed_hosts())


@lru_cache(maxsize=16)
def _prometheus(status: int, transport: str):
    """django-prometheus' children for one status, as its before/after middleware count them."""
    m = Metrics.get_instance()
    code = str(status)
    return (
        m.requests_total, m.responses_total, m.requests_latency_before,
        m.requests_by_method.labels(method="POST"), m.requests_by_transport.labels(transport=transport),
        m.requests_body_bytes, m.requests_by_view_transport_method.labels(view=VIEW, transport=transport, method="POST"),
        m.responses_by_status.labels(status=code), m.responses_by_status_view_method.labels(status=code, view=VIEW, method="POST"),
        m.responses_by_charset.labels(charset="utf-8"), m.responses_body_bytes,
        m.requests_latency_by_view_method.labels(view=VIEW, method="POST"),
    )  # fmt: skip


def _count(status: int, transport: str, request_bytes: int, response_bytes: int, started: float) -> None:
    elapsed = time.perf_counter() - started
    (total, responses, before, by_method, by_transport, body_in, by_view, by_status, by_status_view, by_charset, body_out,
     latency) = _prometheus(status, transport)  # fmt: skip
    for counter in (total, responses, by_method, by_transport, by_view, by_status, by_status_view, by_charset):
        counter.inc()
    body_in.observe(request_bytes)
    body_out.observe(response_bytes)
    before.observe(elapsed)
    latency.observe(elapsed)
    requests, seconds = series("POST", TEMPLATE, status)
    seconds.observe(elapsed)
    requests.inc()


def _post(headers: dict[bytes, bytes], body: bytes, path: str, secure: bool) -> tuple[int, bytes, list] | None:
    """On the request thread: (status, body, extra headers), or None for Django to answer."""
    started = time.perf_counter()
    request_id = request_id_from(headers.get(b"x-request-id", b"").decode("latin-1"))
    context = request_id_var.set(request_id)
    signals.request_started.send(sender=DirectPost)
    try:
        try:
            user = decode_token(headers[b"authorization"][7:].decode("ascii").strip())
            data = parse_message_send(json.loads(body.decode("utf-8"), parse_constant=strict_constant) if body else {})
            check_tenant(user.tenant, data.get("tenant_id"))
        except (AiimError, ValidationError, ValueError, UnicodeDecodeError, RecursionError):
            return None  # Django's chain refuses it, in its words (the rate limit counts it there)
        try:
            ratelimit.check(user.tenant, user.user_id)
            payload, status = post_message(user, data)
            extra = []
        except Exception as exc:
            status, payload, more = error_parts(exc, where="DirectPost")
            extra = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in more.items()]
            # Django's own line for a 4xx/5xx answer ("Forbidden: /api/aiim/messages").
            django_logger.log(logging.ERROR if status >= 500 else logging.WARNING, "%s: %s", HTTPStatus(status).phrase, path)
        content = _renderer.render(payload)
        _count(status, "https" if secure else "http", len(body), len(content), started)
        log_request("POST", path, status, started)
        return status, content, [*extra, (b"X-Request-ID", request_id.encode("ascii"))]
    finally:
        signals.request_finished.send(sender=DirectPost)
        request_id_var.reset(context)


class DirectPost:
    """ASGI: the direct lane in front of the API's Django handler (`app`), which gets every
    request the lane does not take."""

    def __init__(self, app):
        self.app = app
        # The handler's request threads: one hop, as for every other API request.
        self._post = sync_to_async(_post, thread_sensitive=False, executor=app.executor)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in PATHS or scope.get("query_string") or not enabled():
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        # Header names arrive lowercased (ASGI); a repeated header keeps its last value here,
        # so any request with a repeat that matters goes to Django below.
        if (
            len(headers) != len(scope["headers"])
            or b"origin" in headers
            or headers.get(b"authorization", b"")[:7].lower() != b"bearer "
            or headers.get(b"content-type", b"").decode("latin-1").lower() not in _JSON_TYPES
            or headers.get(b"accept", b"").decode("latin-1") not in _ANY_JSON_ACCEPT
            or not _host_ok(headers.get(b"host", b"").decode("latin-1"))
        ):
            return await self.app(scope, receive, send)
        body, takes = await _read_body(receive)
        if takes is None:
            return  # the client left (Django would stop here too)
        outcome = await self._post(headers, body, scope["path"], scope.get("scheme") == "https") if takes is True else None
        if outcome is None:
            return await self.app(scope, _replay(body, receive, takes is _More), send)
        status, content, extra = outcome
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [*_static_headers(), (b"Content-Length", str(len(content)).encode()), *extra],
            }
        )
        await send({"type": "http.response.body", "body": content})


async def _read_body(receive) -> tuple[bytes, object]:
    """(the body up to DATA_UPLOAD_MAX_MEMORY_SIZE, whether the lane may take it): True; False
    or `_More` (still more to read) if it is larger; None if the client left."""
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"", None
        chunk = message.get("body", b"")
        parts.append(chunk)
        size += len(chunk)
        more = message.get("more_body", False)
        if limit is not None and size > limit:
            return b"".join(parts), False if not more else _More
        if not more:
            return b"".join(parts), True


class _More:
    """Read past the limit with more to come: Django reads the rest itself."""


def _replay(body: bytes, receive, more: bool):
    """`receive` for Django: what the lane read, then the rest from the client."""
    sent = False

    async def replayed():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": more}
        return await receive()

    return replayed
