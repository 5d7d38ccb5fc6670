"""/api-auth/login and /api-auth/logout: a person in a browser signs in to the browsable API
with one of the service's own tokens (pasted, or with DEBUG minted for a user id and tenant).

The token is kept in the Django session and read back by
aiim_project.session_auth.SessionTokenAuthentication. These pages go through Django's full
middleware (session, CSRF), not the API's one-hop handler. The URL names are DRF's
(`rest_framework:login` / `rest_framework:logout`), so the browsable API links here.
"""

from __future__ import annotations

import time
from urllib.parse import urlencode

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.middleware.csrf import rotate_token
from django.shortcuts import render
from django.urls import path, reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods

from aiim_project.core.auth import decode_token, mint_token
from aiim_project.core.checks import MAX_ID_LENGTH
from aiim_project.core.errors import AiimError
from aiim_project.session_auth import SESSION_TOKEN_KEY

app_name = "rest_framework"

DEFAULT_NEXT = "/api/aiim/conversations"
# Tokens minted by the DEBUG form live as long as `manage.py mint_token`'s in .ci/start.
MINTED_TTL = 24 * 3600


def _next_url(request: HttpRequest) -> str:
    candidate = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        return candidate
    return DEFAULT_NEXT


def _current_principal(request: HttpRequest):
    token = request.session.get(SESSION_TOKEN_KEY)
    if not token:
        return None
    try:
        return decode_token(token)
    except AiimError:
        return None


def _page(request: HttpRequest, *, error: str = "", status: int = 200, form: dict | None = None) -> HttpResponse:
    context = {
        "next": _next_url(request),
        "error": error,
        "can_mint": settings.DEBUG,
        "principal": _current_principal(request),
        "form": form or {},
    }
    return render(request, "browser/login.html", context, status=status)


def _sign_in(request: HttpRequest, token: str) -> HttpResponse:
    principal = decode_token(token)
    # A new session id and CSRF secret at a change of identity (no session fixation).
    request.session.cycle_key()
    rotate_token(request)
    request.session[SESSION_TOKEN_KEY] = token
    if principal.expires_at is not None:
        request.session.set_expiry(max(1, int(principal.expires_at - time.time())))
    return HttpResponseRedirect(_next_url(request))


@require_http_methods(["GET", "POST"])
def login(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        return _page(request)
    if request.POST.get("action") == "mint":
        user_id = request.POST.get("user_id", "").strip()
        tenant = request.POST.get("tenant", "").strip() or settings.JWT_DEFAULT_TENANT
        form = {"user_id": user_id, "tenant": tenant}
        if not settings.DEBUG:
            return _page(request, error="Minting a token here needs DEBUG on.", status=403, form=form)
        if not user_id or len(user_id) > MAX_ID_LENGTH or len(tenant) > MAX_ID_LENGTH:
            return _page(request, error="Give a user id (and optionally a tenant).", status=400, form=form)
        return _sign_in(request, mint_token(user_id=user_id, tenant=tenant, ttl=MINTED_TTL))
    token = "".join(request.POST.get("token", "").split())
    if token.lower().startswith("bearer"):
        token = token[len("bearer"):]
    try:
        return _sign_in(request, token)
    except AiimError as err:
        # The error's code and text only: the token itself is never echoed back.
        return _page(request, error=f"{err.detail} ({err.code})", status=400)


@require_http_methods(["GET", "POST"])
def logout(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        # Logging out changes state: GET only shows the button (POST, CSRF-protected).
        return render(request, "browser/logout.html", {"next": _next_url(request), "principal": _current_principal(request)})
    next_url = _next_url(request)
    request.session.flush()
    return HttpResponseRedirect(f"{reverse('rest_framework:login')}?{urlencode({'next': next_url})}")


urlpatterns = [
    path("login", login, name="login"),
    path("logout", logout, name="logout"),
]
