"""`GET /`: the service banner the original AIIM answered with (name, version, where to go
next), so a client or probe that starts from the root finds the service. Public, like the docs."""

from __future__ import annotations

from django.conf import settings
from django.http import JsonResponse
from django.views.decorators.http import require_GET

NAME = "AIIM"


@require_GET
def index(request):
    return JsonResponse(
        {
            "name": NAME,
            "description": "Instant messaging for AI applications",
            # One version for the banner and the OpenAPI document.
            "version": settings.SPECTACULAR_SETTINGS["VERSION"],
            "links": {
                "health": "/health",
                "metrics": "/metrics",
                "openapi": "/openapi.json",
                "docs": "/docs",
                "redoc": "/redoc",
                "api": "/api/aiim/",
                "websocket": "/api/aiim/ws",
                "ws_test": "/ws-test",
            },
        }
    )
