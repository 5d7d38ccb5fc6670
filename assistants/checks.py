"""Production refuses to migrate/start-check while assistants hold API keys and no
ASSISTANT_ENCRYPTION_KEY is set (they could not be decrypted, and new ones not stored)."""

from __future__ import annotations

from django.conf import settings
from django.core import checks


@checks.register("assistants", checks.Tags.database)
def encryption_key_check(app_configs=None, databases=None, **kwargs):
    if settings.ASSISTANT_ENCRYPTION_KEY or not databases:
        return []
    from .models import Assistant

    try:
        with_keys = Assistant.objects.exclude(api_key_encrypted="").exists()
    except Exception:  # table not migrated yet: nothing stored
        return []
    if not with_keys:
        return []
    return [
        checks.Error(
            "Assistants hold API keys but ASSISTANT_ENCRYPTION_KEY is not set.",
            hint="Set ASSISTANT_ENCRYPTION_KEY to the Fernet key they were stored with (see env.example).",
            id="assistants.E001",
        )
    ]
