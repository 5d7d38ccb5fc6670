from datetime import UTC, datetime, time

from django.core.management.base import BaseCommand, CommandError
from django.utils.dateparse import parse_date, parse_datetime

from aiim_project.operations import messages_purge, messages_purgeable_count


def parse_cutoff(value: str) -> datetime:
    """A date (midnight UTC) or an ISO 8601 datetime; a naive datetime is taken as UTC."""
    try:
        moment = parse_datetime(value)
        if moment is None:
            day = parse_date(value)
            if day is None:
                raise ValueError
            moment = datetime.combine(day, time.min)
    except ValueError:
        raise CommandError(f"--before must be a date (2025-01-31) or an ISO 8601 datetime, not {value!r}.") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Command(BaseCommand):
    help = "Retention: delete messages created before a date, in batches (optionally for one tenant)."

    def add_arguments(self, parser):
        parser.add_argument("--before", required=True, help="delete messages created before this date/datetime (UTC)")
        parser.add_argument("--tenant", default=None, help="only this tenant's messages")
        parser.add_argument("--dry-run", action="store_true", help="count what would be deleted; delete nothing")
        parser.add_argument("--batch-size", type=int, default=1000)

    def handle(self, *args, before: str, tenant: str | None, dry_run: bool, batch_size: int, **options):
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        cutoff = parse_cutoff(before)
        scope = f" of tenant {tenant!r}" if tenant is not None else ""
        if dry_run:
            count = messages_purgeable_count(before=cutoff, tenant=tenant)
            self.stdout.write(f"Dry run: {count} message(s){scope} created before {cutoff.isoformat()} would be deleted.")
            return
        total = 0
        for deleted in messages_purge(before=cutoff, tenant=tenant, batch_size=batch_size):
            total += deleted
            self.stdout.write(f"  deleted {deleted} (total {total})")
        self.stdout.write(f"Deleted {total} message(s){scope} created before {cutoff.isoformat()}.")
