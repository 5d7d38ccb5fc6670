"""HTTP adapters of the front-end streams: check access (errors as every REST error), then
answer with a streaming response whose body runs on the event loop (see asgi_handler)."""

from __future__ import annotations

from django.http import HttpResponse, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import JSONParser
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from aiim_project.core.auth import JWTPrincipalAuthentication
from aiim_project.core.errors import Invalid
from assistants import selectors as assistant_selectors
from assistants import services as assistant_services
from messaging import selectors
from messaging.selectors import conversation_for_member

from . import chat, conversation_events, message_stream, uimessage
from .auth import StreamTokenAuthentication

TOKEN_PARAM = OpenApiParameter("token", str, description="The JWT, for clients that cannot send headers (EventSource).")
SSE_RESPONSE = {(200, "text/event-stream"): OpenApiTypes.STR}
# The bearer scheme of the rest of the API; `?token=` is documented as a parameter.
BEARER = [{"bearerAuth": []}]


class JSONErrors(BaseContentNegotiation):
    """EventSource and the AI SDK ask for `Accept: text/event-stream`: the stream answers
    it, and an error before the stream starts is the API's JSON body whatever they asked."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class StreamView(APIView):
    """Base of a GET stream endpoint (the chat endpoints' stream views can share it): bearer
    or ?token=, JSON errors."""

    authentication_classes = (StreamTokenAuthentication,)
    renderer_classes = (JSONRenderer,)
    content_negotiation_class = JSONErrors
    # The streaming app's chunk gap loader, handed over by the wiring (`as_view(load_chunks=...)`).
    load_chunks = None


def sse_response(body, headers: dict[str, str]) -> StreamingHttpResponse:
    response = StreamingHttpResponse(body, content_type="text/event-stream")
    for name, value in headers.items():
        response[name] = value
    return response


def _since_seq(request: Request) -> int | None:
    """Last-Event-ID (an EventSource reconnecting) wins over ?since_seq= (the first URL)."""
    raw = request.headers.get("Last-Event-ID") or request.query_params.get("since_seq")
    if raw in (None, ""):
        return None
    if not raw.isdigit() or len(raw) > 18:
        raise Invalid("since_seq / Last-Event-ID must be a seq (an integer >= 0).", errors={"since_seq": ["Invalid."]})
    return int(raw)


class MessageStreamView(StreamView):
    @extend_schema(
        parameters=[TOKEN_PARAM],
        auth=BEARER,
        responses=SSE_RESPONSE,
        summary="A message as an AI SDK UI message stream (stored text, then live chunks)",
    )
    def get(self, request: Request, conversation_id: str, message_id: str) -> StreamingHttpResponse:
        principal = request.user
        ids = {"conversation_id": conversation_id, "message_id": message_id}
        selectors.message_for_member(tenant=principal.tenant, user_id=principal.user_id, **ids)
        body = message_stream.ui_message_stream(
            tenant=principal.tenant, user_id=principal.user_id, expires_at=principal.expires_at, load_chunks=self.load_chunks, **ids
        )
        return sse_response(body, uimessage.HEADERS)


class ConversationEventsView(StreamView):
    @extend_schema(
        parameters=[TOKEN_PARAM, OpenApiParameter("since_seq", int, description="Resume after this seq (or Last-Event-ID).")],
        auth=BEARER,
        responses=SSE_RESPONSE,
        summary="A conversation's events over Server-Sent Events",
    )
    def get(self, request: Request, conversation_id: str) -> StreamingHttpResponse:
        principal = request.user
        since_seq = _since_seq(request)
        conversation_for_member(tenant=principal.tenant, user_id=principal.user_id, conversation_id=conversation_id)
        body = conversation_events.conversation_events(
            tenant=principal.tenant,
            user_id=principal.user_id,
            conversation_id=conversation_id,
            since_seq=since_seq,
            expires_at=principal.expires_at,
            load_chunks=self.load_chunks,
        )
        return sse_response(body, {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})



class ChatView(StreamView):
    """POST /chat: store the caller's message, answer with the run's reply (DefaultChatTransport)."""

    authentication_classes = (JWTPrincipalAuthentication,)
    parser_classes = (JSONParser,)

    @extend_schema(request=OpenApiTypes.OBJECT, auth=BEARER, responses=SSE_RESPONSE, summary="AI SDK chat: send a message, stream the reply")
    def post(self, request: Request) -> StreamingHttpResponse:
        principal = request.user
        body = chat.parse_chat_body(request.data)
        where = {"tenant": principal.tenant, "user_id": principal.user_id, "conversation_id": body.conversation_id}
        if body.trigger == chat.REGENERATE:
            run = assistant_services.chat_regenerate(**where, assistant_id=body.assistant_id)
        else:
            run = assistant_services.chat_send(**where, client_msg_id=body.client_msg_id, text=body.text, assistant_id=body.assistant_id)
        return _run_response(self, run)


class ChatResumeView(StreamView):
    @extend_schema(parameters=[TOKEN_PARAM], auth=BEARER, responses={**SSE_RESPONSE, 204: None},
                   summary="AI SDK chat: the active run's reply from its start, or 204")
    def get(self, request: Request, conversation_id: str):
        principal = request.user
        run = assistant_selectors.active_run_for_conversation(
            tenant=principal.tenant, user_id=principal.user_id, conversation_id=conversation_id
        )
        if run is None:
            return HttpResponse(status=204)
        return _run_response(self, run)


class ChatStopView(APIView):
    authentication_classes = (JWTPrincipalAuthentication,)

    @extend_schema(request=None, auth=BEARER, responses={200: OpenApiTypes.OBJECT}, summary="AI SDK chat: stop the active run")
    def post(self, request: Request, conversation_id: str) -> Response:
        principal = request.user
        runs = assistant_services.chat_stop(tenant=principal.tenant, user_id=principal.user_id, conversation_id=conversation_id)
        return Response({"stopped": [run.id for run in runs]})


def _run_response(view: StreamView, run) -> StreamingHttpResponse:
    principal = view.request.user
    body = chat.run_reply_stream(
        tenant=principal.tenant, user_id=principal.user_id, conversation_id=run.conversation_id, run_id=run.id,
        expires_at=principal.expires_at, load_chunks=view.load_chunks,
    )
    return sse_response(body, uimessage.HEADERS)
