"""REST adapter for the domain errors: every failure is `{"detail", "code"}` (+ `errors`)."""

from __future__ import annotations

import logging
import math

from django.core.exceptions import RequestDataTooBig
from django.http import Http404, JsonResponse
from rest_framework import exceptions as drf
from rest_framework.response import Response

from aiim_project.core.errors import AiimError, RateLimited, ServerError, TooLarge, Unavailable, as_aiim_error
from aiim_project.core.metrics import ERRORS

logger = logging.getLogger("aiim.errors")


def _flatten(detail) -> dict[str, list[str]]:
    if isinstance(detail, dict):
        return {str(k): [str(m) for m in (v if isinstance(v, list) else [v])] for k, v in detail.items()}
    if isinstance(detail, list):
        return {"non_field_errors": [str(m) for m in detail]}
    return {"non_field_errors": [str(detail)]}


def _from_drf(exc: Exception) -> AiimError | None:
    from aiim_project.core import errors as e

    if isinstance(exc, drf.ValidationError):
        return e.Invalid("Invalid input.", errors=_flatten(exc.detail))
    if isinstance(exc, drf.ParseError):
        return e.Invalid(f"Malformed request body: {exc.detail}")
    if isinstance(exc, drf.UnsupportedMediaType):
        return e.Invalid(str(exc.detail))
    if isinstance(exc, drf.NotAuthenticated):
        return e.NotAuthenticated()
    if isinstance(exc, drf.AuthenticationFailed):
        return e.TokenInvalid()
    if isinstance(exc, drf.PermissionDenied):
        return e.Forbidden()
    if isinstance(exc, (drf.NotFound, Http404)):
        return e.NotFound()
    if isinstance(exc, drf.Throttled):
        return e.RateLimited(retry_after=exc.wait or 1)
    if isinstance(exc, RequestDataTooBig):
        return TooLarge("Request body is too large.")
    if isinstance(exc, RecursionError):
        # The JSON parser gave up on a body nested thousands of levels deep.
        return e.Invalid("Malformed request body: nested too deeply.")
    return None


def error_body(err: AiimError) -> dict:
    body: dict = {"detail": err.detail, "code": err.code}
    if err.errors:
        body["errors"] = err.errors
    body.update(err.extra)
    return body


def _headers(err: AiimError) -> dict[str, str]:
    if isinstance(err, (RateLimited, Unavailable)):
        return {"Retry-After": str(max(1, math.ceil(err.retry_after)))}
    return {}


def rest_exception_handler(exc: Exception, context) -> Response | None:
    if isinstance(exc, drf.APIException) and (as_aiim_error(exc) or _from_drf(exc)) is None:
        return Response({"detail": str(exc.detail), "code": exc.default_code}, status=exc.status_code)
    status, body, headers = error_parts(exc, where=type(context.get("view")).__name__)
    return Response(body, status=status, headers=headers)


def error_parts(exc: Exception, *, where: str) -> tuple[int, dict, dict[str, str]]:
    """(status, body, headers) of the API's answer to `exc`; counted in aiim_errors_total.
    The REST views' exception handler and the direct lane (aiim_project.rest_direct) share it."""
    err = as_aiim_error(exc) or _from_drf(exc)
    if err is None:
        logger.exception("unhandled error in %s", where)
        err = ServerError()
    elif isinstance(err, Unavailable) and err is not exc:
        logger.warning("dependency unavailable: %s", type(exc).__name__)
    ERRORS.labels(code=err.code, via="rest").inc()
    headers = _headers(err)
    if err.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="aiim"'
    return err.status, error_body(err), headers


def json_404(request, exception=None):
    return JsonResponse({"detail": "Not found.", "code": "not_found"}, status=404)


def json_500(request):
    err = ServerError()
    return JsonResponse({"detail": err.detail, "code": err.code}, status=err.status)
