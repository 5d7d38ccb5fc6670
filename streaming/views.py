"""REST adapter of the stream endpoint: parse, call one service, render."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from aiim_project.core.checks import check_tenant
from messaging.openapi import MessageEnvelopeOut
from messaging.rendering import StatusView, message_dict
from messaging.selectors import member_cursors

from . import reaper, selectors, services
from .serializers import StreamChunkIn


class StreamChunkView(APIView):
    def check_throttles(self, request: Request) -> None:
        """Only the chunk that starts a stream counts against the rate limit (see post)."""

    @extend_schema(
        request=StreamChunkIn,
        responses={201: MessageEnvelopeOut, 200: MessageEnvelopeOut},
        summary="Append a chunk to my stream (the first one starts it: 201), end it, or abort it",
    )
    def post(self, request: Request) -> Response:
        serializer = StreamChunkIn(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        tenant, user_id = request.user.tenant, request.user.user_id
        check_tenant(tenant, data.get("tenant_id"))
        ids = {"conversation_id": data["conversation_id"], "client_msg_id": data["client_msg_id"]}
        if data["stream_abort"]:
            message = services.stream_abort(tenant=tenant, sender=user_id, **ids)
            return Response({"message": self._render(message)})
        # A chunk with a later index cannot start a stream, so it needs no look-up.
        if data["chunk_index"] in (None, 0) and not selectors.stream_exists(tenant=tenant, sender=user_id, **ids):
            super().check_throttles(request)
        result = services.stream_append(
            tenant=tenant,
            sender=user_id,
            chunk=data["chunk"],
            chunk_index=data["chunk_index"],
            stream_end=data["stream_end"],
            **ids,
        )
        if result.started:
            reaper.ensure_running_from_worker_thread()
            return Response({"message": message_dict(result.message)}, status=status.HTTP_201_CREATED)
        return Response({"message": self._render(result.message)})

    @staticmethod
    def _render(message) -> dict:
        return message_dict(message, StatusView(member_cursors(message.conversation_id)).status(message))
