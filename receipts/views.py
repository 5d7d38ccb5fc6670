"""REST adapters: parse, call one service or selector, render."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from aiim_project.core.checks import check_tenant
from messaging.rendering import iso

from . import selectors, services
from .models import CursorKind
from .serializers import DeliveredIn, MessageReceiptsOut, ReadIn


def parse(serializer_class, data) -> dict:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class DeliveredView(APIView):
    @extend_schema(request=DeliveredIn, responses={204: None}, summary="Move my delivered cursor forward")
    def post(self, request: Request) -> Response:
        data = parse(DeliveredIn, request.data)
        check_tenant(request.user.tenant, data.get("tenant_id"))
        services.cursor_advance(
            tenant=request.user.tenant,
            user_id=request.user.user_id,
            conversation_id=data["conversation_id"],
            kind=CursorKind.DELIVERED,
            seq=data.get("up_to_seq"),
            message_id=data.get("message_id"),
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class ReadView(APIView):
    @extend_schema(request=ReadIn, responses={204: None}, summary="Move my read cursor forward (implies delivered)")
    def post(self, request: Request) -> Response:
        data = parse(ReadIn, request.data)
        check_tenant(request.user.tenant, data.get("tenant_id"))
        services.check_claimed_user(request.user.user_id, data.get("user_id"))
        services.cursor_advance(
            tenant=request.user.tenant,
            user_id=request.user.user_id,
            conversation_id=data["conversation_id"],
            kind=CursorKind.READ,
            seq=data.get("last_read_seq"),
            message_id=data.get("last_read_message_id"),
            seq_field="last_read_seq",
            id_field="last_read_message_id",
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class MessageReceiptsView(APIView):
    @extend_schema(
        responses=MessageReceiptsOut,
        summary="Delivered and read times of one message, for every member but its sender (and members who joined after it)",
    )
    def get(self, request: Request, conversation_id: str, message_id: str) -> Response:
        result = selectors.message_receipts(
            tenant=request.user.tenant,
            user_id=request.user.user_id,
            conversation_id=conversation_id,
            message_id=message_id,
        )
        return Response(
            {
                "conversation_id": result.conversation_id,
                "message_id": result.message_id,
                "receipts": [
                    {"user_id": r.user_id, "delivered_at": iso(r.delivered_at), "read_at": iso(r.read_at)}
                    for r in result.receipts
                ],
            }
        )
