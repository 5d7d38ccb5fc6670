"""PostgreSQL storage parameters for the rows every message and receipt updates: free space on
each page so those updates stay heap-only (HOT), and autovacuum that keeps up with a small,
hot table (docs/architecture.md, "Hot rows"). Other databases: nothing to do."""

from django.db import migrations

# table -> storage parameters. fillfactor applies to pages written from now on.
STORAGE = {
    "messaging_conversation": {
        "fillfactor": 70,
        "autovacuum_vacuum_scale_factor": 0.01,
        "autovacuum_vacuum_threshold": 500,
        "autovacuum_analyze_scale_factor": 0.02,
        "autovacuum_vacuum_cost_delay": 1,
    },
    "messaging_member": {
        "fillfactor": 80,
        "autovacuum_vacuum_scale_factor": 0.02,
        "autovacuum_vacuum_threshold": 1000,
        "autovacuum_analyze_scale_factor": 0.05,
        "autovacuum_vacuum_cost_delay": 1,
    },
}


def apply(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table, params in STORAGE.items():
        options = ", ".join(f"{name} = {value}" for name, value in params.items())
        schema_editor.execute(f"ALTER TABLE {schema_editor.quote_name(table)} SET ({options})")


def reset(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table, params in STORAGE.items():
        schema_editor.execute(f"ALTER TABLE {schema_editor.quote_name(table)} RESET ({', '.join(params)})")


class Migration(migrations.Migration):
    dependencies = [("messaging", "0003_stream_state_stopped_failed")]

    operations = [migrations.RunPython(apply, reset, elidable=False)]
