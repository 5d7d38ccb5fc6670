"""OpenAPI: tells drf-spectacular how AIIM authenticates (a bearer JWT)."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class JWTPrincipalScheme(OpenApiAuthenticationExtension):
    target_class = "aiim_project.auth.JWTPrincipalAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "A JWT signed with JWT_SECRET: `sub` = user id, `tenant` = tenant id (default \"default\").",
        }
