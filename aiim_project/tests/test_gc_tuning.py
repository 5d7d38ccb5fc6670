"""The collector's tuning at server start-up (aiim_project.gc_tuning)."""

from __future__ import annotations

import gc
import os
import subprocess
import sys

import pytest

from aiim_project import gc_tuning


@pytest.fixture
def collector():
    """Put the collector back as it was after the test."""
    threshold = gc.get_threshold()
    yield
    gc.set_threshold(*threshold)


def test_start_up_objects_are_frozen_and_young_collections_are_rarer(settings, collector):
    gc.set_threshold(700, 10, 10)
    settings.GC_GEN0_THRESHOLD = 5000
    gc_tuning.tune()
    assert gc.get_threshold() == (5000, 10, 10)
    assert gc.get_freeze_count() > 0


def test_zero_leaves_the_collector_as_python_starts_it(settings, collector):
    gc.set_threshold(700, 10, 10)
    settings.GC_GEN0_THRESHOLD = 0
    frozen = gc.get_freeze_count()
    gc_tuning.tune()
    assert gc.get_threshold() == (700, 10, 10)
    assert gc.get_freeze_count() == frozen


def test_a_process_that_loads_the_asgi_application_is_tuned():
    """What Daphne does at start-up, in a fresh interpreter."""
    code = "import gc, aiim_project.asgi; print(gc.get_threshold()[0], gc.get_freeze_count() > 0)"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "aiim_project.settings", "GC_GEN0_THRESHOLD": "4321"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["4321", "True"]
