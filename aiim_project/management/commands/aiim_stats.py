import json
from dataclasses import asdict

from django.core.management.base import BaseCommand

from aiim_project.operations import tenant_stats

COLUMNS = ("tenant", "conversations", "members", "users", "messages", "open_streams", "last_activity")


class Command(BaseCommand):
    help = "Counts per tenant: conversations, memberships, distinct users, messages, open streams."

    def add_arguments(self, parser):
        parser.add_argument("--tenant", default=None)
        parser.add_argument("--json", action="store_true", dest="as_json", help="one JSON document, for scripts")

    def handle(self, *args, tenant: str | None, as_json: bool, **options):
        rows = [asdict(s) for s in tenant_stats(tenant=tenant)]
        if as_json:
            self.stdout.write(json.dumps(rows, default=str, indent=2))
            return
        table = [COLUMNS] + [tuple("-" if r[c] is None else str(r[c]) for c in COLUMNS) for r in rows]
        widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
        for line in table:
            self.stdout.write("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip())
