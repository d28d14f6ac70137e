"""Whether the hub's PostgreSQL database uses TimescaleDB (HUB_TIMESCALE=auto|on|off), decided in one place.

`auto` uses TimescaleDB when the extension is already created or can be created, and otherwise carries on as
plain PostgreSQL with one warning naming why; `on` refuses with that reason; `off` never touches it. A server
where the package is installed but not preloaded lists the extension as available while refusing to create
it: that is the usual state right after `apt-get install`, so it is checked before CREATE EXTENSION.
"""

import logging
import time
from datetime import datetime
from typing import Any

import psycopg
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, OperationalError, connection, transaction
from django.db.backends.utils import CursorWrapper

from storage.engine import RAW, ROLLUPS
from storage.postgres import INSERT_STAGED, LATEST_AND_SEEN, WriteSql

logger = logging.getLogger(__name__)

MODES = ("auto", "on", "off")


class TimescaleUnavailable(ImproperlyConfigured):
    """HUB_TIMESCALE=on, and this server cannot give the database TimescaleDB (the message says why)."""


def _fetch_one(cursor: CursorWrapper, sql: str, params: list[str] | None = None) -> tuple[Any, ...] | None:
    cursor.execute(sql, params or [])
    row: tuple[Any, ...] | None = cursor.fetchone()
    return row


def _fetch_value(cursor: CursorWrapper, sql: str, params: list[str] | None = None) -> Any:
    """The one value of a query that always answers one row (a setting, a comparison)."""
    row = _fetch_one(cursor, sql, params)
    if row is None:
        raise DatabaseError(f"no row for {sql!r}")
    return row[0]


def preloads_timescaledb(shared_preload_libraries: str) -> bool:
    """Whether a server's `shared_preload_libraries` setting names TimescaleDB (its own name, not a prefix of one)."""
    return "timescaledb" in [name.strip() for name in shared_preload_libraries.split(",")]


def timescale_missing_reason(cursor: CursorWrapper) -> str | None:
    """Why TimescaleDB cannot be used in this database, or None when the extension exists or can be created."""
    if _fetch_one(cursor, EXTENSION_CREATED):
        return None
    if not _fetch_one(cursor, "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"):
        return "the timescaledb extension is not installed on this PostgreSQL server"
    if not preloads_timescaledb(_fetch_value(cursor, "SELECT current_setting('shared_preload_libraries')")):
        return "timescaledb is installed but not in shared_preload_libraries (edit postgresql.conf and restart)"
    return None


def timescale_enable(cursor: CursorWrapper, *, mode: str | None = None) -> bool:
    """Create the extension when the mode and the server allow; True when the database has it (now).

    Raises TimescaleUnavailable with the reason for `on`; warns once with the reason for `auto`.
    """
    mode = mode or settings.HUB_TIMESCALE
    if mode == "off":
        return False
    reason = timescale_missing_reason(cursor)
    if reason is None:
        try:
            with transaction.atomic(using=cursor.db.alias):  # a savepoint inside a migration's transaction
                cursor.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            return True
        except DatabaseError as exc:  # e.g. not allowed to create extensions
            reason = f"CREATE EXTENSION timescaledb failed: {exc}".strip()
    if mode == "on":
        raise TimescaleUnavailable(f"HUB_TIMESCALE=on, but {reason}")
    logger.warning("TimescaleDB not used (HUB_TIMESCALE=auto): %s; carrying on as plain PostgreSQL", reason)
    return False


# The probe, for Django's cursor here and the writer's async connection: the second query names a view that
# exists only where the extension does.
EXTENSION_CREATED = "SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'"
READING_HYPERTABLE = "SELECT 1 FROM timescaledb_information.hypertables WHERE hypertable_name = 'ingest_reading'"


def reading_is_hypertable(cursor: CursorWrapper) -> bool:
    """The readings table is a TimescaleDB hypertable (its rollups are then continuous aggregates)."""
    return bool(_fetch_one(cursor, EXTENSION_CREATED) and _fetch_one(cursor, READING_HYPERTABLE))


# The rollups as continuous aggregates (real-time: the newest, not yet materialised buckets are merged from
# raw rows), refreshed by policies; migration ingest/0003 and `timescale_convert` create them.
CAGGS = {
    name: f"""
        CREATE MATERIALIZED VIEW IF NOT EXISTS {name}
        WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
        SELECT device_id, key, time_bucket(INTERVAL '{width}', ts) AS bucket,
               count(*) AS n, sum(value) AS sum, min(value) AS min, max(value) AS max
        FROM ingest_reading GROUP BY device_id, key, bucket WITH NO DATA
    """  # noqa: S608 - fixed names only
    for name, width in (("ingest_rollup_1m", "1 minute"), ("ingest_rollup_1h", "1 hour"))
}
# Every history query names one device, one key and a bucket range (history/selectors.py `aggregate_statement`).
# TimescaleDB indexes an aggregate on (bucket), (device_id, bucket) and (key, bucket) only: a device's rows lie
# scattered over a day's pages, so the planner scanned the whole fleet's buckets and filtered, 15-60 ms a day of
# minutes against 2-5 ms through this index (docs/benchmarks.md, "Where the bytes go"). Set after every migrate.
ROLLUP_INDEXES = {
    name: f"CREATE INDEX IF NOT EXISTS {name}_device_key_bucket ON {name} (device_id, key, bucket)" for name in CAGGS
}
# start_offset NULL: a refresh covers all time up to end_offset. A refresh recomputes only the buckets that
# writes invalidated, so this costs what changed, and a reading that arrives days late (a device back from
# a week offline, an import) still reaches its rollups; with a finite start_offset it never would.
REFRESH_POLICIES = {  # aggregate -> end_offset of its refresh policy (and its schedule)
    "ingest_rollup_1m": ("1 minute", "1 minute"),
    "ingest_rollup_1h": ("1 hour", "30 minutes"),
}
_REFRESH_JOB = """
    SELECT config->>'start_offset', (config->>'end_offset')::interval = %s::interval
    FROM timescaledb_information.jobs
    WHERE proc_name = 'policy_refresh_continuous_aggregate' AND hypertable_name = %s
"""
_COMPRESSION_JOB = """
    SELECT config->>'compress_after' FROM timescaledb_information.jobs
    WHERE proc_name = 'policy_compression' AND hypertable_name = 'ingest_reading'
"""

# Compressed chunks keep one segment per (device, key), ordered by ts: every history query, the stream's
# catch-up and a resend's conflict check name one device and key and a ts range, so they decompress only
# that segment; a segment of one key's values in time order compresses best (docs/storage.md).
_COMPRESSION = (
    "ALTER TABLE ingest_reading SET (timescaledb.compress, timescaledb.compress_segmentby = 'device_id, key',"
    " timescaledb.compress_orderby = 'ts')"
)


# A chunk being compressed joins the compressed chunk before it while their span fits a week
# (compress_chunk_time_interval): every compressed chunk costs 90-115 KB whatever it holds (its heap's and
# TOAST table's free-space and visibility maps, index and TOAST-index pages), 0.5 of 9.3 bytes per reading at
# 50 devices (docs/benchmarks.md, "Where the bytes go"). Not while raw readings have a retention: chunks are
# dropped whole, and a merged week would keep readings up to 6 days past HUB_RAW_RETENTION_DAYS.
COMPRESSED_CHUNK_SPAN = "7 days"
_COMPRESSED_SPAN_MATCHES = """
    SELECT coalesce(compress_interval_length, '0')::interval = %s::interval
    FROM timescaledb_information.hypertable_compression_settings WHERE hypertable = 'ingest_reading'::regclass
"""


def compressed_chunk_span() -> str:
    """How far compressed chunks are merged: a week, or not at all ("0") while raw readings have a retention."""
    return "0" if settings.HUB_RAW_RETENTION_DAYS > 0 else COMPRESSED_CHUNK_SPAN


def timescale_configure(cursor: CursorWrapper, *, compress_after: str | None = None) -> None:
    """The hypertable's jobs as the settings say (after every `migrate`, and by `timescale_convert`): the
    rollups' refresh policies, compression, and its policy: chunks older than HUB_COMPRESS_AFTER (a
    PostgreSQL interval; "0" or "off": never) are compressed by TimescaleDB's job scheduler, and merged as
    `compressed_chunk_span()` says. A job already configured so is left alone (with whatever schedule an
    operator gave it). The aggregates' index for history queries is created where missing."""
    for statement in ROLLUP_INDEXES.values():
        cursor.execute(statement)
    for name, (end_offset, schedule) in REFRESH_POLICIES.items():
        job = _fetch_one(cursor, _REFRESH_JOB, [end_offset, name])
        if job is not None and job[0] is None and job[1]:
            continue
        cursor.execute("SELECT remove_continuous_aggregate_policy(%s, if_exists => true)", [name])
        cursor.execute(
            "SELECT add_continuous_aggregate_policy(%s, start_offset => NULL, end_offset => %s::interval,"
            " schedule_interval => %s::interval)",
            [name, end_offset, schedule],
        )
    enabled = _fetch_one(
        cursor,
        "SELECT compression_enabled FROM timescaledb_information.hypertables WHERE hypertable_name = 'ingest_reading'",
    )
    if not (enabled and enabled[0]):
        cursor.execute(_COMPRESSION)
    span = compressed_chunk_span()
    if not _fetch_value(cursor, _COMPRESSED_SPAN_MATCHES, [span]):
        cursor.execute(f"ALTER TABLE ingest_reading SET (timescaledb.compress_chunk_time_interval = '{span}')")
    after = settings.HUB_COMPRESS_AFTER if compress_after is None else compress_after
    wanted = None if after.strip().lower() in ("0", "off", "") else after
    job = _fetch_one(cursor, _COMPRESSION_JOB)
    if (
        job is not None
        and wanted is not None
        and _fetch_value(cursor, "SELECT %s::interval = %s::interval", [job[0], wanted])
    ):
        return
    if job is None and wanted is None:
        return
    cursor.execute("SELECT remove_compression_policy('ingest_reading', if_exists => true)")
    if wanted is not None:
        cursor.execute("SELECT add_compression_policy('ingest_reading', compress_after => %s::interval)", [wanted])


def timescale_required(cursor: CursorWrapper) -> None:
    """HUB_TIMESCALE=on: raise TimescaleUnavailable unless the readings table is a hypertable (a hub process
    refuses to start on a database that migrated without TimescaleDB)."""
    if settings.HUB_TIMESCALE != "on" or reading_is_hypertable(cursor):
        return
    reason = timescale_missing_reason(cursor) or "the readings table is not a hypertable"
    raise TimescaleUnavailable(
        f"HUB_TIMESCALE=on, but {reason}: migrate on a server with TimescaleDB, or run `telemetry-hub "
        "timescale_convert`"
    )


def hypertable_create(cursor: CursorWrapper) -> None:
    """The readings table, rows and all, as a hypertable of HUB_TIMESCALE_CHUNK_INTERVAL chunks (migration 0002,
    `timescale_convert`)."""
    cursor.execute(
        "SELECT create_hypertable('ingest_reading', 'ts', chunk_time_interval => %s::interval,"
        " if_not_exists => TRUE, migrate_data => TRUE)",
        [settings.HUB_TIMESCALE_CHUNK_INTERVAL],
    )


# TimescaleDB's continuous aggregates roll up: the writer stores readings and latest values only.
WRITE = WriteSql(
    after_rows=LATEST_AND_SEEN,
    resent=f"{INSERT_STAGED}; {LATEST_AND_SEEN}",
)


def _refreshed(rollup: str, until: datetime, attempts: int = 5) -> None:
    """Refresh an aggregate up to `until`, waiting out the refresh policy's job if it is running meanwhile
    (TimescaleDB refuses overlapping refreshes); raises after `attempts`, and the raw chunks stay."""
    for attempt in range(attempts):
        try:
            with connection.cursor() as cursor:  # outside a transaction: Django runs in autocommit here
                cursor.execute("CALL refresh_continuous_aggregate(%s, NULL, %s)", [rollup, until])
            return
        except OperationalError as exc:
            if "concurrent refresh" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(2)


class Timescale:
    """The TimescaleDB extension of the PostgreSQL engine (storage/postgres.py: `Extension`), where the readings
    table is a hypertable: continuous aggregates instead of the writer's rollups, chunks dropped by retention,
    compression and its policy as the settings say."""

    write = WRITE

    async def active(self, conn: psycopg.AsyncConnection[Any]) -> bool:
        for probe in (EXTENSION_CREATED, READING_HYPERTABLE):
            if await (await conn.execute(probe)).fetchone() is None:
                return False
        return True

    def active_in(self, cursor: CursorWrapper) -> bool:
        return reading_is_hypertable(cursor)

    def retention_apply(self, cutoffs: dict[str, datetime]) -> dict[str, int]:
        """Whole chunks past their age, per relation. Before raw chunks go, the aggregates are refreshed over them
        (a bucket never materialised would be lost), and the drop records no invalidation
        (`timescaledb.skip_cagg_invalidation`): otherwise the next refresh would recompute those buckets from the
        rows just dropped, and the rollups would go with them."""
        dropped: dict[str, int] = {}
        for relation, _column in (RAW, *ROLLUPS):
            if relation not in cutoffs:
                continue
            if relation == RAW[0]:
                for rollup, _bucket in ROLLUPS:
                    _refreshed(rollup, cutoffs[relation])
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("SET LOCAL timescaledb.skip_cagg_invalidation = on")
                cursor.execute("SELECT count(*) FROM drop_chunks(%s, older_than => %s)", [relation, cutoffs[relation]])
                dropped[relation] = cursor.fetchone()[0]
        return dropped

    def configure(self, cursor: CursorWrapper) -> None:
        timescale_configure(cursor)

    def start_checked(self, cursor: CursorWrapper) -> None:
        timescale_required(cursor)
