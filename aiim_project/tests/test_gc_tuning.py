"""The collector's tuning at server start-up (aiim_project.gc_tuning)."""

from __future__ import annotations

import gc
import os
import subprocess
import sys

from aiim_project import gc_tuning


def test_start_up_objects_are_frozen_and_the_thresholds_stay_python_s(settings):
    settings.GC_FREEZE_AT_START = True
    threshold = gc.get_threshold()
    gc.unfreeze()
    gc_tuning.tune()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == threshold


def test_off_leaves_the_collector_as_python_starts_it(settings):
    settings.GC_FREEZE_AT_START = False
    gc.unfreeze()
    gc_tuning.tune()
    assert gc.get_freeze_count() == 0


def run_asgi_process(**env: str) -> list[str]:
    """What Daphne does at start-up, in a fresh interpreter."""
    code = "import gc, aiim_project.asgi; print(gc.get_freeze_count() > 0)"
    full_env = {**os.environ, "DJANGO_SETTINGS_MODULE": "aiim_project.settings", **env}
    out = subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.split()


def test_a_process_that_loads_the_asgi_application_is_tuned():
    assert run_asgi_process() == ["True"]
    assert run_asgi_process(GC_FREEZE_AT_START="false") == ["False"]
