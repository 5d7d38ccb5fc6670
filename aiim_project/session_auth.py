"""A browser's login on the REST API: the token pasted at /api-auth/login, kept in the session.

The API's middleware chain (settings.API_MIDDLEWARE) has no session or CSRF middleware: a
bearer request never pays for them. This class does their work itself, and only for a
request that has no Authorization header but does carry a session cookie; it yields the
same `Principal` as the bearer header would (the token is re-verified on every request, so
expiry and key rotation end a browser session too). docs/browser.md explains the design.
"""

from __future__ import annotations

from importlib import import_module

from django.conf import settings
from rest_framework.authentication import BaseAuthentication

from aiim_project.compat.django import csrf_failure
from aiim_project.core.auth import Principal, decode_token
from aiim_project.core.errors import Forbidden

# The session key holding the token (aiim_project.browser_login writes it).
SESSION_TOKEN_KEY = "aiim_token"


def _session_store(session_key: str):
    return import_module(settings.SESSION_ENGINE).SessionStore(session_key)


class SessionTokenAuthentication(BaseAuthentication):
    """The browsable API's login. CSRF is enforced on unsafe methods, as DRF's
    SessionAuthentication does: a cookie is sent by the browser on any site's request."""

    def authenticate(self, request):
        django_request = request._request
        session_key = django_request.COOKIES.get(settings.SESSION_COOKIE_NAME)
        if not session_key or "HTTP_AUTHORIZATION" in django_request.META:
            return None
        session = _session_store(session_key)
        token = session.get(SESSION_TOKEN_KEY)
        if not token:
            return None
        # Expired or no longer valid: the same 401 as the bearer header (token_expired, ...).
        principal: Principal = decode_token(token)
        django_request.session = session
        self._enforce_csrf(django_request)
        return principal, None

    def _enforce_csrf(self, django_request) -> None:
        reason = csrf_failure(django_request)
        if reason:
            raise Forbidden(f"CSRF Failed: {reason}")

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="aiim"'
