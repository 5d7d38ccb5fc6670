"""The cyclic garbage collector, tuned for a long-running server process.

CPython's collector runs a young collection every 700 net container allocations, and now and
then a full one that walks the whole heap: Django's, DRF's and the URLconf's objects made at
import and kept for the process's life included. Under load the full ones were the longest
pauses of the event loop (114 ms measured, bench/RESULTS.md), and a request or event caught
behind one waits for it. `gc.freeze()` after start-up moves everything alive then into the
permanent generation, which no collection walks again. Measured: REST post p99 roughly
halved (bench/RESULTS.md).

The thresholds stay Python's: a first threshold ten times higher halved the REST p99 too,
but let a connection's cyclic garbage reach the older generations, and connect/disconnect
churn then grew the process by ~10 MB per 1,000 connections (tests/reliability/test_churn.py).
"""

from __future__ import annotations

import gc

from django.conf import settings


def tune() -> None:
    if not settings.GC_FREEZE_AT_START:
        return
    gc.collect()
    gc.freeze()
