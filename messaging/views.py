"""REST adapters: parse, call one service or selector, render."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from aiim_project.core.checks import check_tenant
from aiim_project.core.metrics import MESSAGES_CREATED

from . import selectors, services
from .openapi import ConversationListOut, ConversationOut, MessageEnvelopeOut, MessageHistoryOut
from .rendering import StatusView, conversation_dict, message_dict
from .serializers import (
    ConversationCreateIn,
    ConversationListQuery,
    MembersAddIn,
    MessageHistoryQuery,
    MessageSendIn,
    parse_message_send,
)


def parse(serializer_class, data):
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def render_view(view: selectors.ConversationView) -> dict:
    return conversation_dict(
        view.conversation, members=view.members, last_message=view.last_message, unread_count=view.unread_count
    )


def conversation_response(request: Request, conversation_id: str, code: int = 200) -> Response:
    view = selectors.conversation_view(
        tenant=request.user.tenant, user_id=request.user.user_id, conversation_id=conversation_id
    )
    return Response(render_view(view), status=code)


class ConversationListView(APIView):
    @extend_schema(
        parameters=[ConversationListQuery],
        responses=ConversationListOut,
        operation_id="api_aiim_conversations_list",
        summary="List my conversations, most recent activity first",
    )
    def get(self, request: Request) -> Response:
        q = parse(ConversationListQuery, request.query_params)
        views, next_cursor = selectors.conversation_list(
            tenant=request.user.tenant, user_id=request.user.user_id, limit=q["limit"], cursor=q.get("cursor") or None
        )
        return Response({"conversations": [render_view(v) for v in views], "next_cursor": next_cursor})

    @extend_schema(
        request=ConversationCreateIn,
        responses={201: ConversationOut, 200: ConversationOut},
        summary="Create a conversation (direct ones are de-duplicated)",
    )
    def post(self, request: Request) -> Response:
        data = parse(ConversationCreateIn, request.data)
        check_tenant(request.user.tenant, data.get("tenant_id"))
        conversation, created = services.conversation_create(
            tenant=request.user.tenant,
            creator=request.user.user_id,
            type=data["type"],
            name=data["name"],
            member_ids=data["member_ids"],
            members=[services.MemberSpec(**m) for m in data["members"]],
            metadata=data["metadata"],
        )
        return conversation_response(request, conversation.id, status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class ConversationDetailView(APIView):
    @extend_schema(responses=ConversationOut, summary="One conversation")
    def get(self, request: Request, conversation_id: str) -> Response:
        return conversation_response(request, conversation_id)


class MembersView(APIView):
    @extend_schema(
        request=MembersAddIn, responses=ConversationOut, summary="Add members (owner only; not for direct conversations)"
    )
    def post(self, request: Request, conversation_id: str) -> Response:
        data = parse(MembersAddIn, request.data)
        check_tenant(request.user.tenant, data.get("tenant_id"))
        services.member_add(
            tenant=request.user.tenant,
            actor=request.user.user_id,
            conversation_id=conversation_id,
            user_ids=data["user_ids"],
            role=data["role"],
        )
        return conversation_response(request, conversation_id)


class MemberDetailView(APIView):
    @extend_schema(summary="Remove a member (owner removes anyone; anyone removes themself)", responses={204: None})
    def delete(self, request: Request, conversation_id: str, user_id: str) -> Response:
        services.member_remove(
            tenant=request.user.tenant, actor=request.user.user_id, conversation_id=conversation_id, user_id=user_id
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class MessageSendView(APIView):
    @extend_schema(
        request=MessageSendIn,
        responses={201: MessageEnvelopeOut, 200: MessageEnvelopeOut},
        summary="Send a message (idempotent on client_msg_id)",
    )
    def post(self, request: Request) -> Response:
        data = parse_message_send(request.data)
        check_tenant(request.user.tenant, data.get("tenant_id"))
        body, code = post_message(request.user, data)
        return Response(body, status=code)


def post_message(user, data: dict) -> tuple[dict, int]:
    """The send of `POST /messages` after parsing: (body, status). Shared with the direct lane
    (aiim_project.rest_direct), so both answer alike."""
    message, created = services.message_send(
        tenant=user.tenant,
        sender=user.user_id,
        conversation_id=data["conversation_id"],
        content=data["content"],
        type=data["type"],
        client_msg_id=data["client_msg_id"],
        reply_to=data["reply_to"],
        metadata=data["metadata"],
    )
    if created:
        MESSAGES_CREATED.labels(via="rest").inc()
    status_view = StatusView(selectors.member_cursors(message.conversation_id)) if not created else None
    body = {"message": message_dict(message, status_view.status(message) if status_view else "sent")}
    return body, status.HTTP_201_CREATED if created else status.HTTP_200_OK


class MessageHistoryView(APIView):
    @extend_schema(
        parameters=[MessageHistoryQuery, OpenApiParameter("conversation_id", str, OpenApiParameter.PATH)],
        responses=MessageHistoryOut,
        summary="History, ascending by seq",
    )
    def get(self, request: Request, conversation_id: str) -> Response:
        q = parse(MessageHistoryQuery, request.query_params)
        page = selectors.messages_page(
            tenant=request.user.tenant,
            user_id=request.user.user_id,
            conversation_id=conversation_id,
            limit=q["limit"],
            before_id=q.get("before_id"),
            before_seq=q.get("before_seq"),
            after_seq=q.get("after_seq"),
        )
        statuses = StatusView(page.members)
        return Response(
            {
                "conversation_id": conversation_id,
                "messages": [message_dict(m, statuses.status(m)) for m in page.messages],
                "has_more": page.has_more,
            }
        )
