"""ASGI entry point: HTTP goes to Django (the REST API through the one-hop handler, see
aiim_project.asgi_handler; the rest through Django's own); WebSocket goes through the JWT
middleware to the gateway at /api/aiim/ws (optionally behind an Origin check, see
WS_ALLOWED_ORIGINS). Under Daphne, HTTP bodies reach Django unparsed
(aiim_project.daphne_requests)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aiim_project.settings")
django_asgi_app = get_asgi_application()

from aiim_project import daphne_requests  # noqa: E402
from aiim_project.asgi_handler import OneHopASGIHandler, PathRouter  # noqa: E402

daphne_requests.install()

http_app = PathRouter("/api/aiim/", OneHopASGIHandler(), django_asgi_app)

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import OriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402

from aiim_project.gateway.middleware import JWTAuthMiddleware  # noqa: E402
from aiim_project.gateway.routing import websocket_urlpatterns  # noqa: E402

websocket_app = JWTAuthMiddleware(URLRouter(websocket_urlpatterns))
if settings.WS_ALLOWED_ORIGINS:
    websocket_app = OriginValidator(websocket_app, settings.WS_ALLOWED_ORIGINS)

from assistants.runner import StartRunner  # noqa: E402

# Every server process runs queued assistant runs (ASSISTANT_RUNNER=inline), started by its first call.
application = StartRunner(ProtocolTypeRouter({"http": http_app, "websocket": websocket_app}))

from aiim_project import gc_tuning  # noqa: E402

# Last: what start-up made is frozen out of the collector's way.
gc_tuning.tune()
