"""ASGI entry point: Django is set up first, then the composition root builds the
application (`aiim_project.wiring`)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aiim_project.settings")
django_asgi_app = get_asgi_application()

from aiim_project import gc_tuning, wiring  # noqa: E402

application = wiring.application(django_asgi_app)

# Last: what start-up made is frozen out of the collector's way.
gc_tuning.tune()
