from django.apps import AppConfig


class AssistantsConfig(AppConfig):
    name = "assistants"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # messaging may not import assistants: it calls its generic post-store hook, and
        # the trigger registers into it here.
        from messaging import hooks

        from . import checks, triggers  # noqa: F401  (checks registers the key check)

        hooks.on_messages_stored(triggers.messages_stored)
