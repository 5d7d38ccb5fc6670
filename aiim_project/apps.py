import atexit
import os

from django.apps import AppConfig


class AiimProjectConfig(AppConfig):
    name = "aiim_project"
    verbose_name = "AIIM"

    def ready(self) -> None:
        from django.contrib import admin

        from aiim_project import (
            schema,  # noqa: F401  registers the bearer scheme with drf-spectacular
            wiring,
        )

        wiring.register_admin(admin.site)
        wiring.connect_hooks()

        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            # Several server processes share one metrics directory; a live-summed gauge (open
            # WebSocket connections) must stop counting a process once it has exited.
            from prometheus_client import multiprocess

            atexit.register(multiprocess.mark_process_dead, os.getpid())
