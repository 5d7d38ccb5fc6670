"""Authentication of the GET stream endpoints: the bearer header as everywhere, or `?token=`,
because a browser's EventSource cannot send headers. The query string never reaches a log
line: the request log prints the path only, and Daphne's access log is redacted
(aiim_project.daphne_access)."""

from __future__ import annotations

from aiim_project.core.auth import JWTPrincipalAuthentication, decode_token


class StreamTokenAuthentication(JWTPrincipalAuthentication):
    def authenticate(self, request):
        found = super().authenticate(request)
        if found is not None:
            return found
        token = request.query_params.get("token")
        if token is None:
            return None
        return decode_token(token), token
