"""Time to load a conversation's members for a status (`StatusView`): `Member` instances
against the four cursors as rows (`selectors.member_cursors`), for groups of 5, 50 and 1,000.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_h18 .venv/bin/python bench/status_members.py

It creates conversations in the database it is given: never point it at a real one.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aiim_project.settings")

import django

django.setup()

from messaging import selectors, services  # noqa: E402
from messaging.models import Member  # noqa: E402
from messaging.rendering import StatusView  # noqa: E402

CALLS = 50


def median_ms(load: Callable[[], object]) -> float:
    times = []
    for _ in range(CALLS):
        start = time.perf_counter()
        load()
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 3)


def main() -> None:
    for size in (5, 50, 1000):
        conversation, _ = services.conversation_create(
            tenant="bench-status", creator="u0", type="group", member_ids=[f"u{i}" for i in range(1, size)]
        )
        cid = conversation.id
        instances = median_ms(lambda: StatusView(list(Member.objects.filter(conversation_id=cid).order_by("joined_at", "id"))))  # noqa: B023
        rows = median_ms(lambda: StatusView(selectors.member_cursors(cid)))  # noqa: B023
        print({"members": size, "member_instances_ms": instances, "member_cursors_ms": rows})


if __name__ == "__main__":
    main()
