"""Storage backends for the writer: PostgreSQL (COPY + idempotent INSERT) and SQLite (executemany).

Both store a batch in one transaction: readings (first write of a (device, key, ts) wins), latest value
per (device, key) (newest ts wins; same ts: first write wins), and each device's last_seen.
"""

import asyncio
import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import psycopg
from psycopg.conninfo import make_conninfo
from psycopg_pool import AsyncConnectionPool, PoolTimeout

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Row:
    """A numeric reading bound to its device, ready to store."""

    device_id: int
    key: str
    ts: int
    value: float


@dataclass(frozen=True, slots=True)
class LatestRow:
    device_id: int
    key: str
    ts: int
    value: float | None
    text: str | None


@dataclass(frozen=True, slots=True)
class Batch:
    rows: Sequence[Row]
    latest: Sequence[LatestRow]
    device_ids: Sequence[int]
    seen_at: datetime


class Backend(Protocol):
    async def open(self) -> None: ...
    async def write(self, batch: Batch) -> None: ...
    async def close(self) -> None: ...
    def is_transient(self, exc: BaseException) -> bool: ...


_PG_STAGING = (
    "CREATE TEMP TABLE IF NOT EXISTS hub_staging "
    "(device_id bigint, key text, ts bigint, value float8) ON COMMIT DELETE ROWS"
)
_PG_INSERT = """
    INSERT INTO ingest_reading (device_id, key, ts, value)
    SELECT device_id, key, timestamptz 'epoch' + ts * interval '1 millisecond', value FROM hub_staging
    ON CONFLICT DO NOTHING
"""
# Plain PostgreSQL: the same insert also folds the rows it actually inserted (RETURNING skips conflicts,
# so a resend adds nothing) into the minute and hour rollups. TimescaleDB keeps its continuous aggregates.
_PG_ROLLUP = """
    INSERT INTO {table} AS r (device_id, key, bucket, n, sum, min, max)
    SELECT device_id, key, date_bin(interval '{width}', ts, timestamptz 'epoch'),
           count(*), sum(value), min(value), max(value)
    FROM inserted GROUP BY 1, 2, 3
    ON CONFLICT (device_id, key, bucket) DO UPDATE
    SET n = r.n + EXCLUDED.n, sum = r.sum + EXCLUDED.sum,
        min = LEAST(r.min, EXCLUDED.min), max = GREATEST(r.max, EXCLUDED.max)
"""
_PG_INSERT_WITH_ROLLUPS = f"""
    WITH inserted AS ({_PG_INSERT} RETURNING device_id, key, ts, value),
    minutes AS ({_PG_ROLLUP.format(table="ingest_rollup_1m", width="1 minute")})
    {_PG_ROLLUP.format(table="ingest_rollup_1h", width="1 hour")}
"""
_PG_LATEST = """
    INSERT INTO ingest_latestvalue (device_id, key, ts, value, text)
    SELECT d, k, timestamptz 'epoch' + t * interval '1 millisecond', v, x
    FROM unnest(%s::bigint[], %s::text[], %s::bigint[], %s::float8[], %s::text[]) AS u(d, k, t, v, x)
    ON CONFLICT (device_id, key) DO UPDATE
    SET ts = EXCLUDED.ts, value = EXCLUDED.value, text = EXCLUDED.text
    WHERE ingest_latestvalue.ts < EXCLUDED.ts
"""
_PG_SEEN = """
    UPDATE devices_device SET last_seen = GREATEST(last_seen, %s)
    WHERE id = ANY(%s::bigint[])
"""


def _copy_text(rows: Sequence[Row]) -> str:
    # Keys match [A-Za-z0-9_.-] and values are finite floats: nothing needs COPY escaping.
    return "".join([f"{r.device_id}\t{r.key}\t{r.ts}\t{r.value!r}\n" for r in rows])


class PostgresBackend:
    """COPY into a per-connection temp table, then one INSERT … ON CONFLICT DO NOTHING."""

    def __init__(self, conninfo: str, *, pool_size: int = 2) -> None:
        self._insert: str | None = None  # chosen on the first connection: Timescale or not
        self._pool = AsyncConnectionPool(
            conninfo, min_size=1, max_size=pool_size, open=False, timeout=5.0, configure=self._configure
        )

    @staticmethod
    async def _configure(conn: psycopg.AsyncConnection) -> None:
        await conn.execute(_PG_STAGING)
        await conn.commit()

    async def open(self) -> None:
        # wait=False: a database that is down at start-up is retried by the pool, not fatal.
        await self._pool.open(wait=False)

    @staticmethod
    async def _insert_statement(conn: psycopg.AsyncConnection) -> str:
        cursor = await conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")
        return _PG_INSERT if await cursor.fetchone() else _PG_INSERT_WITH_ROLLUPS

    async def write(self, batch: Batch) -> None:
        latest = batch.latest
        async with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            if self._insert is None:
                self._insert = await self._insert_statement(conn)
            if batch.rows:
                async with cur.copy("COPY hub_staging (device_id, key, ts, value) FROM STDIN") as copy:
                    await copy.write(_copy_text(batch.rows))
                await cur.execute(self._insert)
            await cur.execute(
                _PG_LATEST,
                (
                    [r.device_id for r in latest],
                    [r.key for r in latest],
                    [r.ts for r in latest],
                    [r.value for r in latest],
                    [r.text for r in latest],
                ),
            )
            await cur.execute(_PG_SEEN, (batch.seen_at, list(batch.device_ids)))

    async def close(self) -> None:
        await self._pool.close()

    def is_transient(self, exc: BaseException) -> bool:
        # Connection loss, deadlocks, pool timeouts: retry the same idempotent batch.
        return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError | PoolTimeout | OSError)


def postgres_conninfo(settings_dict: dict) -> str:
    """A libpq conninfo for Django's connection settings (so tests hit Django's test database)."""
    params = {
        "dbname": settings_dict.get("NAME"),
        "user": settings_dict.get("USER"),
        "password": settings_dict.get("PASSWORD"),
        "host": settings_dict.get("HOST"),
        "port": str(settings_dict.get("PORT") or ""),
    }
    extra = {k: v for k, v in (settings_dict.get("OPTIONS") or {}).items() if isinstance(v, str | int)}
    return make_conninfo(**{k: v for k, v in params.items() if v}, **extra)


def sqlite_ts(ts_ms: int) -> str:
    """The text Django's SQLite backend stores for a datetime (str() of the naive UTC value)."""
    return str(datetime.fromtimestamp(ts_ms / 1000, tz=UTC).replace(tzinfo=None))


_SQLITE_INSERT = "INSERT OR IGNORE INTO ingest_reading (device_id, key, ts, value) VALUES (?, ?, ?, ?)"
_SQLITE_LATEST = """
    INSERT INTO ingest_latestvalue (device_id, key, ts, value, text) VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (device_id, key) DO UPDATE
    SET ts = excluded.ts, value = excluded.value, text = excluded.text
    WHERE excluded.ts > ingest_latestvalue.ts
"""
_SQLITE_SEEN = "UPDATE devices_device SET last_seen = max(coalesce(last_seen, ''), ?) WHERE id = ?"


class SqliteBackend:
    """The embedded default: the same batches through executemany on one connection in a worker thread."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None

    async def open(self) -> None:
        uri = self._path.startswith("file:")
        self._conn = sqlite3.connect(self._path, uri=uri, timeout=20, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")

    async def write(self, batch: Batch) -> None:
        await asyncio.to_thread(self._write, batch)

    def _write(self, batch: Batch) -> None:
        assert self._conn is not None, "open() first"  # noqa: S101
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(_SQLITE_INSERT, [(r.device_id, r.key, sqlite_ts(r.ts), r.value) for r in batch.rows])
            conn.executemany(
                _SQLITE_LATEST, [(r.device_id, r.key, sqlite_ts(r.ts), r.value, r.text) for r in batch.latest]
            )
            seen = str(batch.seen_at.astimezone(UTC).replace(tzinfo=None))
            conn.executemany(_SQLITE_SEEN, [(seen, device_id) for device_id in batch.device_ids])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def is_transient(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.OperationalError)


def backend_from_settings() -> Backend:
    from django.db import connections

    settings_dict = connections["default"].settings_dict
    vendor = connections["default"].vendor
    if vendor == "postgresql":
        return PostgresBackend(postgres_conninfo(settings_dict))
    if vendor == "sqlite":
        return SqliteBackend(str(settings_dict["NAME"]))
    raise RuntimeError(f"unsupported database vendor {vendor!r}: use PostgreSQL or SQLite")
