"""GET /api/aiim/presence?user_ids=a,b"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from aiim_project.core import presence
from aiim_project.core.checks import check_user_id
from aiim_project.core.errors import Invalid

from .openapi import PresenceOut


class PresenceView(APIView):
    @extend_schema(
        parameters=[OpenApiParameter("user_ids", str, required=True, description="Comma-separated user ids (same tenant)")],
        responses=PresenceOut,
        summary="Who is online",
    )
    def get(self, request: Request) -> Response:
        raw = request.query_params.get("user_ids", "")
        user_ids = list(dict.fromkeys(u for u in raw.split(",") if u))
        if not user_ids:
            raise Invalid("user_ids is required: a comma-separated list.", errors={"user_ids": ["This field is required."]})
        if len(user_ids) > presence.MAX_LOOKUP:
            raise Invalid(f"At most {presence.MAX_LOOKUP} user ids.", errors={"user_ids": ["Too many."]})
        for user_id in user_ids:
            check_user_id(user_id, "user_ids")
        return Response({"presence": presence.lookup(tenant=request.user.tenant, user_ids=user_ids)})
