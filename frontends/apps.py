from django.apps import AppConfig


class FrontendsConfig(AppConfig):
    """HTTP streams for browser and AI SDK front ends: a message as an AI SDK UI message
    stream, conversation events over Server-Sent Events (docs/protocol.md)."""

    name = "frontends"
    default_auto_field = "django.db.models.BigAutoField"
