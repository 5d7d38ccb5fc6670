"""Django's ASGI handler for the REST API, with one thread hop per request.

Stock Django (5.2) under ASGI, for a sync DRF view behind the (sync-only) middleware stack,
spends per request:

* a new thread: `ThreadSensitiveContext` gives every request its own one-thread executor,
  started on first use and shut down at the end;
* five trips between the event loop and that thread: `request_started.asend` (its sync
  receivers), the middleware chain (`sync_to_async`), `_get_response_async` back on the loop
  (`async_to_sync`), the view (`sync_to_async` again), `response.close()` (`sync_to_async`);
* a disconnect-listener task and an `asyncio.wait` over it and the request task.

`OneHopASGIHandler` builds the API's middleware chain (`API_MIDDLEWARE`: `MIDDLEWARE` without
what only the admin uses) in Django's synchronous mode (as under WSGI) and runs
`request_started`, the chain with the view, and, for a response held in memory,
`response.close()` (`request_finished`, which hands the thread's database connection back to
the pool) in ONE call on a pooled thread, then sends the response from the loop. That is how
a threaded WSGI server runs Django: one thread per request in flight, the request's
connection used and closed on that thread. Same URLconf, signals, exception handling and
response bytes.

Differences, all deliberate:
* `request_finished` fires when the in-memory response is complete, just before its bytes are
  sent rather than after. A streaming response is still closed after it is sent; the request
  thread hands its connection back first.
* No disconnect listener: it could only cancel the task that awaits a sync view, not the view;
  the view finishes, and Daphne drops a response for a connection that has gone. A streaming
  response with an async iterator (the SSE endpoints of `frontends`) is the exception: its
  body runs on the loop after the view returned, and `aiim_project.http_streams` sends it,
  cancelling it when the client leaves or stops reading. No thread and no database
  connection is held while it waits: the view's thread handed its connection back when the
  view returned.
* The threads come from one pool of `HTTP_THREADS`, so a burst of requests cannot check out
  more pooled database connections than that (Django's per-request threads could).

`aiim_project.asgi` sends only the REST API (`/api/aiim/`) here, where every view is a sync
DRF view; the rest (admin, docs, health, metrics) keeps Django's stock handler.
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
from django.http import FileResponse
from django.urls import set_script_prefix
from django.utils.module_loading import import_string

from aiim_project import http_streams


class OneHopASGIHandler(ASGIHandler):
    def load_middleware(self, is_async: bool = False) -> None:
        """The synchronous chain of `API_MIDDLEWARE` (as under WSGI): `get_response` runs it
        end to end on one thread. Django's loop over `MIDDLEWARE`, without its async
        adaptation: every entry is sync-only (aiim_project.sync_middleware)."""
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
    def _executor(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(max_workers=settings.HTTP_THREADS, thread_name_prefix="aiim-http")

    @cached_property
    def _serve_async(self):
        return sync_to_async(self._serve, thread_sensitive=False, executor=self._executor)

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
        if response.streaming and response.is_async:
            # A long-lived stream (SSE): watched for the client leaving or not reading.
            await http_streams.send_stream(self.send_response, response, receive, send)
        else:
            await self.send_response(response, send)
        if response.streaming:
            await sync_to_async(response.close, thread_sensitive=False, executor=self._executor)()


class PathRouter:
    """HTTP requests under `prefix` go to `fast`, the others to `default`."""

    def __init__(self, prefix: str, fast, default):
        self.prefix = prefix
        self.fast = fast
        self.default = default

    async def __call__(self, scope, receive, send):
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        app = self.fast if path.startswith(self.prefix) else self.default
        return await app(scope, receive, send)
