"""Minute and hour rollups of numeric readings (count, sum, min, max per device, key and bucket).

- TimescaleDB (the readings table is a hypertable, migration 0002): continuous aggregates with
  materialized_only = false (real-time: the newest, not yet materialised bucket is merged from raw rows);
  their refresh policies are set after every migrate (storage/apps.py).
- Plain PostgreSQL: tables of the same shape, maintained by the writer in the transaction that inserts
  the readings (only rows actually inserted count, so resent readings do not inflate them).
- SQLite (embedded default): none; aggregates read raw rows.
"""

from django.db import migrations

from storage.timescale import CAGGS, reading_is_hypertable

_TABLE = """
CREATE TABLE IF NOT EXISTS {name} (
    device_id bigint NOT NULL,  -- no foreign key: rollups outlive raw rows and deleted devices alike
    key varchar(64) NOT NULL,
    bucket timestamptz NOT NULL,
    n bigint NOT NULL,
    sum double precision NOT NULL,
    min double precision NOT NULL,
    max double precision NOT NULL,
    PRIMARY KEY (device_id, key, bucket)
)
"""


def create_rollups(apps, schema_editor) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        if reading_is_hypertable(cursor):
            for statement in CAGGS.values():  # their refresh policies: storage.timescale.timescale_configure
                cursor.execute(statement)
        else:
            for name in ("ingest_rollup_1m", "ingest_rollup_1h"):
                cursor.execute(_TABLE.format(name=name))


def drop_rollups(apps, schema_editor) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        kind = "MATERIALIZED VIEW" if reading_is_hypertable(cursor) else "TABLE"
        for name in ("ingest_rollup_1h", "ingest_rollup_1m"):
            cursor.execute(f"DROP {kind} IF EXISTS {name}")


class Migration(migrations.Migration):
    atomic = False  # continuous aggregates cannot be created inside a transaction
    dependencies = [("ingest", "0002_timescale_hypertable")]
    operations = [migrations.RunPython(create_rollups, drop_rollups)]
