"""PostgreSQL: a message's content compressed with lz4 instead of pglz. A stream's every chunk
rewrites the message's whole text (the row always holds the text so far), and a text over
~2 KB is compressed on every rewrite: with pglz that cost grew with the reply and showed in
every reply's chunk latency (docs/streaming.md, "Storage and durability"). Applies to values
written from now on. Servers built without lz4, and other databases: nothing to do."""

from django.db import migrations

TABLE, COLUMN = "messaging_message", "content"


def lz4_available(connection) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'")
        row = cursor.fetchone()
    return bool(row and row[0])


def _set(schema_editor, method: str) -> None:
    if schema_editor.connection.vendor == "postgresql" and lz4_available(schema_editor.connection):
        q = schema_editor.quote_name
        schema_editor.execute(f"ALTER TABLE {q(TABLE)} ALTER COLUMN {q(COLUMN)} SET COMPRESSION {method}")


def apply(apps, schema_editor):
    _set(schema_editor, "lz4")


def reset(apps, schema_editor):
    _set(schema_editor, "pglz")


class Migration(migrations.Migration):
    dependencies = [("messaging", "0006_message_stream_name")]

    operations = [migrations.RunPython(apply, reset, elidable=False)]
