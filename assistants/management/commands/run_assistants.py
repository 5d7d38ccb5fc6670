"""`manage.py run_assistants`: a runner process, for ASSISTANT_RUNNER=worker deployments
(run any number; claims and leases keep them from running one run twice)."""

from __future__ import annotations

import asyncio
import signal

from django.core.management.base import BaseCommand

from ...runner import Runner


class Command(BaseCommand):
    help = "Run queued assistant runs until stopped (SIGTERM/SIGINT)."

    def handle(self, *args, **options):
        async def main() -> None:
            runner = Runner()
            task = asyncio.get_running_loop().create_task(runner.run_forever())
            for sig in (signal.SIGTERM, signal.SIGINT):
                asyncio.get_running_loop().add_signal_handler(sig, task.cancel)
            self.stdout.write(f"assistant runner {runner.owner} started")
            self.stdout.flush()
            try:
                await task
            except asyncio.CancelledError:
                pass

        asyncio.run(main())
