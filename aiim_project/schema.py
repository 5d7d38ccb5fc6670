"""OpenAPI: tells drf-spectacular how AIIM authenticates (a bearer JWT)."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class JWTPrincipalScheme(OpenApiAuthenticationExtension):
    target_class = "aiim_project.core.auth.JWTPrincipalAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "A JWT signed with JWT_SECRET: `sub` = user id, `tenant` = tenant id (default \"default\").",
        }


ERROR_SCHEMA = {
    "type": "object",
    "required": ["detail", "code"],
    "properties": {
        "detail": {"type": "string"},
        "code": {
            "type": "string",
            "enum": [
                "invalid", "not_authenticated", "token_invalid", "token_expired", "forbidden", "tenant_mismatch",
                "not_found", "conflict", "too_large", "rate_limited", "unavailable",
            ],
        },
        "errors": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}},
    },
}

# Every API operation can fail these ways (docs/protocol.md section 2); views document only
# their success shapes.
COMMON_ERRORS = {
    "400": "Malformed JSON, wrong types, missing fields or bad query parameters",
    "401": "Missing, forged or expired token",
    "403": "Not a member, not allowed, or tenant_id differs from the token's tenant",
    "404": "Unknown id, or another tenant's",
    "429": "Over RATE_LIMIT_PER_SEC; see Retry-After",
    "503": "A required dependency is down; see Retry-After; nothing was half-written",
}
RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait before retrying"}}


def add_error_responses(result, generator, request, public):
    """drf-spectacular post-processing hook: the shared error body and the error statuses."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    # The API routes accept an optional trailing slash; name each path as docs/protocol.md does.
    result["paths"] = {_protocol_path(path): operations for path, operations in result.get("paths", {}).items()}
    ref = {"$ref": "#/components/schemas/Error"}
    for path, operations in result["paths"].items():
        if not path.startswith("/api/aiim/"):
            continue
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            for status, description in COMMON_ERRORS.items():
                response = {"description": description, "content": {"application/json": {"schema": ref}}}
                if status in ("429", "503"):
                    response["headers"] = RETRY_AFTER
                responses.setdefault(status, response)
    return result


def _protocol_path(path: str) -> str:
    return path.rstrip("/") if path.startswith("/api/aiim/") else path
