"""Abort streams idle past STREAM_IDLE_TIMEOUT, keeping their text (each gets message.updated).

Server processes already do this in the background; this command is for operators and cron.
"""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand

from streaming import reaper, services


class Command(BaseCommand):
    help = "Abort AI streams that received no chunk for STREAM_IDLE_TIMEOUT seconds."

    def add_arguments(self, parser):
        parser.add_argument("--loop", action="store_true", help="Keep running, reaping every STREAM_IDLE_TIMEOUT/4 s.")

    def handle(self, *args, loop: bool = False, **options):
        while True:
            total = 0
            while batch := services.streams_reap():
                total += len(batch)
                if len(batch) < services.REAP_BATCH:
                    break
            self.stdout.write(f"aborted {total} stale stream(s)")
            if not loop:
                return
            time.sleep(reaper.interval())
