"""Make the readings table a TimescaleDB hypertable where HUB_TIMESCALE and the server allow (storage/timescale.py).

On plain PostgreSQL (or HUB_TIMESCALE=off) and SQLite it does nothing; `manage.py timescale_convert`
converts later.
"""

from django.db import migrations

from storage.timescale import hypertable_create, timescale_enable


def make_hypertable(apps, schema_editor) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        if timescale_enable(cursor):
            hypertable_create(cursor)


class Migration(migrations.Migration):
    dependencies = [("ingest", "0001_initial")]
    operations = [migrations.RunPython(make_hypertable, migrations.RunPython.noop)]
