from django.core.management.base import BaseCommand

from aiim_project.operations import seq_counters_reseed


class Command(BaseCommand):
    help = (
        "Raise the Redis seq counters to the highest seq the database has committed (never "
        "lower one). Run after Redis was flushed, restarted empty or restored from a snapshot."
    )

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=1000)

    def handle(self, *args, batch_size: int, **options):
        result = seq_counters_reseed(batch_size=batch_size)
        if result.backend != "redis":
            self.stdout.write(f"Seq backend is '{result.backend}': counters live in the database, nothing to reseed.")
            return
        self.stdout.write(
            f"Checked {result.checked} conversation(s); raised {len(result.raised)} counter(s) to the database's maximum."
        )
        for conversation_id in result.raised:
            self.stdout.write(f"  raised {conversation_id}")
