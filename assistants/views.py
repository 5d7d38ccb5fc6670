"""REST adapters of the assistants API: parse, call one service or selector, render."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from . import selectors, services
from .rendering import assistant_dict, run_dict
from .serializers import (
    AssistantIn,
    AssistantListOut,
    AssistantOut,
    AssistantPatchIn,
    RunListOut,
    RunListQuery,
    RunOut,
    to_input,
)


def parse(serializer):
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class AssistantListView(APIView):
    @extend_schema(responses=AssistantListOut, operation_id="api_aiim_assistants_list", summary="The tenant's assistants (no secrets)")
    def get(self, request: Request) -> Response:
        full = request.user.is_admin
        assistants = selectors.assistant_list(tenant=request.user.tenant)
        return Response({"assistants": [assistant_dict(a, full=full) for a in assistants]})

    @extend_schema(request=AssistantIn, responses={201: AssistantOut}, summary="Create an assistant (admin; api_key is write-only)")
    def post(self, request: Request) -> Response:
        services.check_admin(is_admin=request.user.is_admin)
        data = parse(AssistantIn(data=request.data))
        assistant = services.assistant_create(
            tenant=request.user.tenant, is_admin=True, assistant_id=data["assistant_id"], data=to_input(data)
        )
        return Response(assistant_dict(assistant), status=status.HTTP_201_CREATED)


class AssistantDetailView(APIView):
    @extend_schema(responses=AssistantOut, summary="One assistant (no secrets)")
    def get(self, request: Request, assistant_id: str) -> Response:
        assistant = selectors.assistant_get(tenant=request.user.tenant, assistant_id=assistant_id)
        return Response(assistant_dict(assistant, full=request.user.is_admin))

    @extend_schema(request=AssistantPatchIn, responses=AssistantOut, summary="Change an assistant (admin)")
    def patch(self, request: Request, assistant_id: str) -> Response:
        services.check_admin(is_admin=request.user.is_admin)
        data = parse(AssistantPatchIn(data=request.data))
        assistant = services.assistant_update(
            tenant=request.user.tenant, is_admin=True, assistant_id=assistant_id, data=to_input(data)
        )
        return Response(assistant_dict(assistant))

    @extend_schema(responses={204: None}, summary="Delete an assistant (admin)")
    def delete(self, request: Request, assistant_id: str) -> Response:
        services.assistant_delete(tenant=request.user.tenant, is_admin=request.user.is_admin, assistant_id=assistant_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class RunDetailView(APIView):
    @extend_schema(responses=RunOut, summary="One run (members of its conversation)")
    def get(self, request: Request, run_id: str) -> Response:
        run = selectors.run_for_member(tenant=request.user.tenant, user_id=request.user.user_id, run_id=run_id)
        return Response(run_dict(run))


class RunStopView(APIView):
    @extend_schema(request=None, responses=RunOut, summary="Stop a run (any member; 409 if it has ended)")
    def post(self, request: Request, run_id: str) -> Response:
        run = services.run_stop(tenant=request.user.tenant, user_id=request.user.user_id, run_id=run_id)
        return Response(run_dict(run))


class ConversationRunsView(APIView):
    @extend_schema(parameters=[RunListQuery], responses=RunListOut, operation_id="api_aiim_conversation_runs_list", summary="A conversation's runs, newest first")
    def get(self, request: Request, conversation_id: str) -> Response:
        q = parse(RunListQuery(data=request.query_params))
        runs = selectors.conversation_runs(
            tenant=request.user.tenant, user_id=request.user.user_id, conversation_id=conversation_id, limit=q["limit"]
        )
        return Response({"runs": [run_dict(r) for r in runs]})
