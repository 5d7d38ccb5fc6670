"""The cyclic garbage collector, tuned for a long-running server: `gc.freeze()` after start-up,
thresholds left at Python's. Measured pauses and why: docs/architecture.md, "Runtime details of the shared base".
"""

from __future__ import annotations

import gc

from django.conf import settings


def tune() -> None:
    if not settings.GC_FREEZE_AT_START:
        return
    gc.collect()
    gc.freeze()
