"""A stream's chunks update its message row: keep those updates heap-only (HOT) on PostgreSQL.
The open-streams index no longer keys on `stream_updated_at` (which every chunk changes), and
the message table's pages keep some room for the new row versions (docs/streaming.md,
"Storage and durability"). Other databases: only the index changes."""

from django.db import migrations, models

FILLFACTOR = 90


def apply(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"ALTER TABLE messaging_message SET (fillfactor = {FILLFACTOR})")


def reset(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("ALTER TABLE messaging_message RESET (fillfactor)")


class Migration(migrations.Migration):
    dependencies = [("messaging", "0004_hot_row_storage")]

    operations = [
        migrations.RemoveIndex(model_name="message", name="message_open_streams"),
        migrations.AddIndex(
            model_name="message",
            index=models.Index(condition=models.Q(("stream_state", "streaming")), fields=["created_at"], name="message_open_streams"),
        ),
        migrations.RunPython(apply, reset, elidable=False),
    ]
