"""Make the readings table a TimescaleDB hypertable when the extension is available.

Only TimescaleDB exercises this path; on plain PostgreSQL and SQLite it does nothing.
"""

from django.conf import settings
from django.db import migrations


def _timescale_available(cursor) -> bool:
    cursor.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
    if cursor.fetchone() is None:
        return False
    cursor.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    return True


def make_hypertable(apps, schema_editor) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        if not _timescale_available(cursor):
            return
        cursor.execute(
            "SELECT create_hypertable('ingest_reading', 'ts', chunk_time_interval => %s::interval,"
            " if_not_exists => TRUE, migrate_data => TRUE)",
            [settings.HUB_TIMESCALE_CHUNK_INTERVAL],
        )


class Migration(migrations.Migration):
    dependencies = [("ingest", "0001_initial")]
    operations = [migrations.RunPython(make_hypertable, migrations.RunPython.noop)]
