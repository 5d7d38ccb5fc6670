from django.apps import AppConfig


class StreamingConfig(AppConfig):
    name = "streaming"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # messaging may not import streaming, so streaming plugs its gap fill into the
        # gateway's ordered delivery here.
        from messaging import delivery

        from .gapfill import chunk_gap_loader

        delivery.chunk_gap_loader = chunk_gap_loader
