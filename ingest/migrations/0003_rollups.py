"""Minute and hour rollups of numeric readings (count, sum, min, max per device, key and bucket).

- TimescaleDB (the readings table is a hypertable, migration 0002): continuous aggregates with
  materialized_only = false (real-time: the newest, not yet materialised bucket is merged from raw rows)
  and refresh policies.
- Plain PostgreSQL: tables of the same shape, maintained by the writer in the transaction that inserts
  the readings (only rows actually inserted count, so resent readings do not inflate them).
- SQLite (embedded default): none; aggregates read raw rows.
"""

from django.db import migrations

from core.timescale import reading_is_hypertable

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

_CAGG_1M = """
CREATE MATERIALIZED VIEW IF NOT EXISTS ingest_rollup_1m
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT device_id, key, time_bucket(INTERVAL '1 minute', ts) AS bucket,
       count(*) AS n, sum(value) AS sum, min(value) AS min, max(value) AS max
FROM ingest_reading GROUP BY device_id, key, bucket WITH NO DATA
"""
_CAGG_1H = """
CREATE MATERIALIZED VIEW IF NOT EXISTS ingest_rollup_1h
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT device_id, key, time_bucket(INTERVAL '1 hour', ts) AS bucket,
       count(*) AS n, sum(value) AS sum, min(value) AS min, max(value) AS max
FROM ingest_reading GROUP BY device_id, key, bucket WITH NO DATA
"""
_CAGG_POLICIES = [
    "SELECT add_continuous_aggregate_policy('ingest_rollup_1m', start_offset => INTERVAL '2 days',"
    " end_offset => INTERVAL '1 minute', schedule_interval => INTERVAL '1 minute', if_not_exists => true)",
    "SELECT add_continuous_aggregate_policy('ingest_rollup_1h', start_offset => INTERVAL '7 days',"
    " end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '30 minutes', if_not_exists => true)",
]


def create_rollups(apps, schema_editor) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        if reading_is_hypertable(cursor):
            for statement in (_CAGG_1M, _CAGG_1H, *_CAGG_POLICIES):
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
