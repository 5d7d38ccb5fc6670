"""The composition root: the one place where the apps are wired together, in this order:
`frame_table`, `api_urls` (with the gateway's SSE and chat streams), `register_admin`,
`connect_hooks` (the assistants' trigger on messaging's post-store hook), `websocket_app` (the
gateway with the frame table and streaming's chunk loader), `application` (with the assistant
runner's start). Nothing else imports the gateway; the hub starts per event loop on first use
(docs/architecture.md, "The composition root").
"""

from __future__ import annotations

from collections.abc import Mapping

from django.core.exceptions import ImproperlyConfigured

from aiim_project.core.frames import FrameSpec


def merge(*tables: tuple[str, Mapping[str, FrameSpec]]) -> dict[str, FrameSpec]:
    """Merge (owner, table) pairs; two apps claiming one frame type is a start-up error,
    never a silent override."""
    merged: dict[str, FrameSpec] = {}
    owners: dict[str, str] = {}
    for owner, table in tables:
        for frame_type, spec in table.items():
            if frame_type in merged:
                raise ImproperlyConfigured(f"frame type {frame_type!r} is defined by both {owners[frame_type]} and {owner}")
            merged[frame_type], owners[frame_type] = spec, owner
    return merged


def frame_table() -> dict[str, FrameSpec]:
    import assistants.frames
    import messaging.frames
    import receipts.frames
    import streaming.frames

    return merge(
        ("messaging", messaging.frames.FRAMES),
        ("receipts", receipts.frames.FRAMES),
        ("streaming", streaming.frames.FRAMES),
        ("assistants", assistants.frames.FRAMES),
    )


def api_urls() -> list:
    from django.urls import include, path, re_path

    from aiim_project.errors import json_404
    from aiim_project.gateway.sse import urls as stream_urls
    from streaming.gapfill import chunk_gap_loader

    return [
        # The gateway's HTTP streams (SSE), following the hub like a WebSocket subscription.
        path("", include(stream_urls.patterns(load_chunks=chunk_gap_loader))),
        # streaming's `messages/stream` before messaging's `messages/<conversation_id>`.
        path("", include("streaming.urls")),
        path("", include("receipts.urls")),
        path("", include("assistants.urls")),
        path("", include("messaging.urls")),
        # Last: any other path under the API answers with the JSON error body, DEBUG or not.
        re_path(r"", json_404),
    ]


def register_admin(site) -> None:
    from assistants.admin import AssistantAdmin, RunAdmin
    from assistants.models import Assistant, Run
    from messaging.admin import ConversationAdmin, MemberAdmin
    from messaging.models import Conversation, Member, Message
    from receipts.admin import CursorMoveAdmin
    from receipts.models import CursorMove
    from streaming.admin import StreamMessageAdmin

    site.register(Conversation, ConversationAdmin)
    site.register(Member, MemberAdmin)
    # messaging's message pages, with streaming's "abort stream" action.
    site.register(Message, StreamMessageAdmin)
    site.register(CursorMove, CursorMoveAdmin)
    site.register(Assistant, AssistantAdmin)
    site.register(Run, RunAdmin)


def connect_hooks() -> None:
    """messaging may not import assistants: a human's stored message reaches the assistants'
    trigger through messaging's generic post-store hook."""
    from assistants import triggers
    from messaging import hooks

    hooks.on_messages_stored(triggers.messages_stored)


def gateway():
    """The gateway's ASGI app: one consumer per connection, built with its collaborators."""
    from aiim_project.gateway.consumer import GatewayConsumer
    from streaming.gapfill import chunk_gap_loader

    return GatewayConsumer.as_asgi(frames=frame_table(), load_chunks=chunk_gap_loader)


def websocket_app():
    from channels.routing import URLRouter
    from channels.security.websocket import OriginValidator
    from django.conf import settings
    from django.urls import re_path

    from aiim_project.gateway.middleware import JWTAuthMiddleware

    app = JWTAuthMiddleware(URLRouter([re_path(r"^api/aiim/ws/?$", gateway())]))
    if settings.WS_ALLOWED_ORIGINS:
        app = OriginValidator(app, settings.WS_ALLOWED_ORIGINS)
    return app


def application(django_asgi_app):
    """The ASGI application; `django_asgi_app` is Django's own (settings loaded, apps ready)."""
    from channels.routing import ProtocolTypeRouter

    from aiim_project.compat import autobahn, daphne
    from aiim_project.compat.django import OneHopASGIHandler
    from aiim_project.core import logs
    from aiim_project.gateway import http_streams
    from aiim_project.path_router import PathRouter
    from aiim_project.rest_direct import DirectPost
    from assistants.runner import StartRunner

    daphne.install()
    autobahn.lazy_debug_formatting()
    daphne.redact_access_log(logs.redact_query_tokens)
    # POST /messages takes the direct lane when it can (aiim_project.rest_direct).
    api = OneHopASGIHandler(send_stream=http_streams.send_stream)
    http_app = PathRouter("/api/aiim/", DirectPost(api), django_asgi_app)
    # Every server process runs queued assistant runs (ASSISTANT_RUNNER=inline), started by
    # its first call: Daphne offers no start-up hook inside its loop.
    return StartRunner(ProtocolTypeRouter({"http": http_app, "websocket": websocket_app()}))


def http_app_of(application):
    """The HTTP half of `application` (what tests inspect)."""
    return application.app.application_mapping["http"]
