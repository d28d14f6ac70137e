"""Make the readings table a TimescaleDB hypertable where HUB_TIMESCALE and the server allow (core/timescale.py).

On plain PostgreSQL (or HUB_TIMESCALE=off) and SQLite it does nothing; `manage.py timescale_convert`
converts later.
"""

from django.conf import settings
from django.db import migrations

from core.timescale import timescale_enable


def make_hypertable(apps, schema_editor) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        if not timescale_enable(cursor):
            return
        cursor.execute(
            "SELECT create_hypertable('ingest_reading', 'ts', chunk_time_interval => %s::interval,"
            " if_not_exists => TRUE, migrate_data => TRUE)",
            [settings.HUB_TIMESCALE_CHUNK_INTERVAL],
        )


class Migration(migrations.Migration):
    dependencies = [("ingest", "0001_initial")]
    operations = [migrations.RunPython(make_hypertable, migrations.RunPython.noop)]
