"""The cyclic garbage collector, tuned for a long-running server process.

CPython's collector runs a young collection every 700 net container allocations, and every
hundredth is a full one that walks the whole heap: Django's, DRF's and the URLconf's objects
made at import and kept for the process's life included. Under load the full ones were the
longest pauses of the event loop (114 ms measured, bench/RESULTS.md), and a request or event
caught behind one waits for it. `gc.freeze()` after start-up moves everything alive then into
the permanent generation, which no collection walks again; a higher first threshold makes the
young collections ten times rarer. Cycles are still collected, a little later. Measured:
REST post p99 37-40 ms instead of 84-95 ms, and ~6% less CPU per post.
"""

from __future__ import annotations

import gc

from django.conf import settings


def tune() -> None:
    if settings.GC_GEN0_THRESHOLD <= 0:
        return
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(settings.GC_GEN0_THRESHOLD, gen1, gen2)
