"""Django: the REST API's ASGI handler with one thread hop per request (rebuilds `load_middleware`'s
`_view_middleware`, `_middleware_chain`, ...), middleware copies with `async_capable` off, and
model instances from fixed SQL rows without `Model.__init__` (docs/internals.md, "compat/django.py").
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import cached_property

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.core.handlers.exception import convert_exception_to_response
from django.db import close_old_connections
from django.db.models.base import ModelState
from django.db.models.signals import post_init, pre_init
from django.http import FileResponse
from django.urls import set_script_prefix
from django.utils.module_loading import import_string


class OneHopASGIHandler(ASGIHandler):
    def __init__(self, *, send_stream=None) -> None:
        # How a long-lived async stream (SSE) is sent: the gateway's, which notices the client
        # leaving or not reading; without one, Django's own `send_response`.
        self._send_stream = send_stream
        super().__init__()

    def load_middleware(self, is_async: bool = False) -> None:
        """The synchronous chain of `API_MIDDLEWARE` (as under WSGI): `get_response` runs it
        end to end on one thread."""
        self._view_middleware = []
        self._template_response_middleware = []
        self._exception_middleware = []
        handler = convert_exception_to_response(self._get_response)
        for path in reversed(settings.API_MIDDLEWARE):
            middleware = import_string(path)(handler)
            if hasattr(middleware, "process_view"):
                self._view_middleware.insert(0, middleware.process_view)
            if hasattr(middleware, "process_template_response"):
                self._template_response_middleware.append(middleware.process_template_response)
            if hasattr(middleware, "process_exception"):
                self._exception_middleware.append(middleware.process_exception)
            handler = convert_exception_to_response(middleware)
        self._middleware_chain = handler

    @cached_property
    def executor(self) -> ThreadPoolExecutor:
        """The API's request threads (HTTP_THREADS)."""
        return ThreadPoolExecutor(max_workers=settings.HTTP_THREADS, thread_name_prefix="aiim-http")

    @cached_property
    def _serve_async(self):
        return sync_to_async(self._serve, thread_sensitive=False, executor=self.executor)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        await self.handle(scope, receive, send)

    def _serve(self, scope, body_file):
        """On the request thread: everything from request_started to request_finished."""
        set_script_prefix(get_script_prefix(scope))
        signals.request_started.send(sender=self.__class__, scope=scope)
        request, error_response = self.create_request(scope, body_file)
        if request is None:
            body_file.close()
            error_response.close()
            return error_response
        response = self.get_response(request)
        response._handler_class = self.__class__
        if isinstance(response, FileResponse):
            response.block_size = self.chunk_size
        if response.streaming:
            # Sent (and closed) from the loop; what this thread opened goes back now.
            close_old_connections()
        else:
            response.close()
        return response

    async def handle(self, scope, receive, send):
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        try:
            response = await self._serve_async(scope, body_file)
        finally:
            body_file.close()
        if response.streaming and response.is_async and self._send_stream is not None:
            # A long-lived stream (SSE): watched for the client leaving or not reading.
            await self._send_stream(self.send_response, response, receive, send)
        else:
            await self.send_response(response, send)
        if response.streaming:
            await sync_to_async(response.close, thread_sensitive=False, executor=self.executor)()


def sync_only(cls: type) -> type:
    """A copy of a `MiddlewareMixin` middleware with `async_capable = False`: consecutive ones
    run as one block on the view's thread (docs/internals.md, "compat/django.py")."""
    return type(cls.__name__, (cls,), {"async_capable": False, "__module__": cls.__module__, "__doc__": cls.__doc__})


def csrf_failure(request) -> str | None:
    """Django's CSRF check on `request` without the CSRF middleware in the chain: the reason
    it fails, or None. Overrides `CsrfViewMiddleware._reject` (as DRF's CSRFCheck does) to get
    the reason instead of a rendered 403 page; always loads the CSRF cookie, so that forms
    rendered by this request carry a token matching it."""
    from django.middleware.csrf import CsrfViewMiddleware

    class Check(CsrfViewMiddleware):
        def _reject(self, request, reason):
            return reason

    check = Check(lambda req: None)
    check.process_request(request)
    return check.process_view(request, None, (), {})


def instances_from_rows(model: type, rows: list, alias: str) -> list:
    """What `model.from_db(alias, None, row)` builds for rows of every concrete field in
    order, without `Model.__init__` (a setattr per field and the pre_init / post_init
    signals): a history page of 51 messages spent ~15% of its CPU there. With any receiver of
    those signals for `model`, `from_db` itself."""
    if pre_init.has_listeners(model) or post_init.has_listeners(model):
        return [model.from_db(alias, None, row) for row in rows]
    names = [f.attname for f in model._meta.concrete_fields]
    out = []
    for row in rows:
        obj = model.__new__(model)
        state = obj._state = ModelState()
        state.adding, state.db = False, alias
        obj.__dict__.update(zip(names, row))
        out.append(obj)
    return out
