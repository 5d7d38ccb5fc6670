"""`manage.py fake_model`: a local OpenAI-compatible server that streams word by word
(developer tool; the tests use the same code, assistants/fake_model.py)."""

from __future__ import annotations

import asyncio

from django.core.management.base import BaseCommand

from ...fake_model import ECHO, FakeModel, Script


class Command(BaseCommand):
    help = "Run a scripted OpenAI-compatible chat completions server on loopback (for trying assistants)."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=8090)
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--reply", default=ECHO, help="the reply text (default: echo the last user message)")
        parser.add_argument("--delay", type=float, default=0.05, help="seconds between words")
        parser.add_argument("--reasoning", default="", help="reasoning deltas sent first, separated by '|'")
        parser.add_argument("--words", type=int, default=0, help="reply with this many time-stamped words (benchmarks)")

    def handle(self, *args, port: int, host: str, reply: str, delay: float, reasoning: str, words: int = 0, **options):
        if words:
            reply = " ".join(["w"] * words)
        script = Script(text=reply, delay=delay, reasoning=[r for r in reasoning.split("|") if r], stamp=bool(words))
        server = FakeModel(host=host, port=port, default=script)

        async def main() -> None:
            await server.serve()
            self.stdout.write(f"fake model at {server.base_url} (POST /chat/completions); Ctrl-C stops it", ending="\n")
            self.stdout.flush()
            await asyncio.Event().wait()

        try:
            asyncio.run(main())
        except KeyboardInterrupt:
            pass
