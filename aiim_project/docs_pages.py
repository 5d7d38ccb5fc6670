"""/docs (Swagger UI) and /redoc: the API reference from pinned local assets
(drf-spectacular-sidecar), under a Content-Security-Policy that lets the page load nothing
from anywhere but this service. Swagger UI's script comes from a URL of its own (the "split"
view) so that no inline script needs allowing; ReDoc's "API docs by Redocly" footer logo,
which it always fetches from a CDN, is blocked by `img-src`.
"""

from __future__ import annotations

from functools import wraps

from drf_spectacular.views import SpectacularRedocView, SpectacularSwaggerSplitView

# Inline styles: both UIs style elements from JavaScript. `blob:` workers: ReDoc's search.
DOCS_CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        "worker-src 'self' blob:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
)


def with_docs_csp(view):
    @wraps(view)
    def wrapped(request, *args, **kwargs):
        response = view(request, *args, **kwargs)
        response["Content-Security-Policy"] = DOCS_CSP
        return response

    return wrapped


swagger_ui = with_docs_csp(SpectacularSwaggerSplitView.as_view(url_name="schema"))
redoc = with_docs_csp(SpectacularRedocView.as_view(url_name="schema"))
