"""Storage backends for the writer: PostgreSQL (COPY, then one INSERT per table) and SQLite (executemany).

Both store a batch in one transaction: readings (first write of a (device, key, ts) wins), latest value
per (device, key) (newest ts wins; same ts: first write wins), and each device's last_seen. A batch naming
a device that no longer exists is rolled back whole and raises DevicesGone.

Writes may overlap (PostgreSQL: one connection each). The writer orders them with a `Turn`: a batch's
statements start only after the previous batch's have run, and it commits only after the previous one
committed, so overlapping batches behave as if written one after the other.
"""

import asyncio
import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple, Protocol

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from core.db import Dialect, postgres_conninfo, sqlite_ts
from core.timescale import EXTENSION_CREATED, READING_HYPERTABLE

logger = logging.getLogger(__name__)


class Row(NamedTuple):
    """A numeric reading bound to its device, ready to store (a plain tuple in this order will do)."""

    device_id: int
    key: str
    ts: int
    value: float


class LatestRow(NamedTuple):
    device_id: int
    key: str
    ts: int
    value: float | None
    text: str | None


@dataclass(frozen=True, slots=True)
class Batch:
    """One transaction's worth: numeric rows, the newest reading per (device, key), the devices seen."""

    rows: Sequence[tuple[int, str, int, float]]
    latest: Sequence[LatestRow]  # sorted by (device_id, key): every writer locks these rows in one order
    device_ids: Sequence[int]  # sorted, for the same reason
    seen_at: datetime


class DevicesGone(Exception):
    """Some devices of the batch were deleted; nothing of the batch was stored."""

    def __init__(self, device_ids: set[int]) -> None:
        super().__init__(f"devices deleted meanwhile: {sorted(device_ids)}")
        self.device_ids = device_ids


class Turn(Protocol):
    """A write's place among overlapping writes (the writer's flushes)."""

    async def to_apply(self) -> None:
        """Returns once the previous write's statements have run."""

    def applied(self) -> None:
        """This write's statements have run, or never will: the next write may run its own."""

    async def to_commit(self) -> None:
        """Returns once the previous write has committed; raises (and this write rolls back) if it did not."""


class _Alone:
    """The turn of a write that overlaps nothing it must be ordered after."""

    async def to_apply(self) -> None:
        return None

    def applied(self) -> None:
        return None

    async def to_commit(self) -> None:
        return None


ALONE: Turn = _Alone()


class Backend(Protocol):
    max_in_flight: int  # writes that may overlap

    async def open(self) -> None: ...
    async def write(self, batch: Batch, turn: Turn = ALONE) -> None: ...
    async def close(self) -> None: ...
    def is_transient(self, exc: BaseException) -> bool: ...
    def refuses(self, exc: BaseException) -> bool:
        """The database refused a value of the batch (its content), not the batch for its own state."""


_PG_STAGING = (
    "CREATE TEMP TABLE IF NOT EXISTS hub_staging "
    "(device_id bigint, key text, ts bigint, value float8) ON COMMIT DELETE ROWS"
)
_PG_SELECT = """
    SELECT device_id, key, timestamptz 'epoch' + ts * interval '1 millisecond', value FROM hub_staging
    ORDER BY device_id, key, ts
"""
_ROLLUP_UPSERT = """
    ON CONFLICT (device_id, key, bucket) DO UPDATE
    SET n = r.n + EXCLUDED.n, sum = r.sum + EXCLUDED.sum,
        min = LEAST(r.min, EXCLUDED.min), max = GREATEST(r.max, EXCLUDED.max)
"""
# Plain PostgreSQL: fold {source}'s rows into the minute rollups, and those minutes into the hour
# rollups: one aggregation pass, each rollup row touched once per batch. TimescaleDB keeps its own.
_PG_ROLLUPS = """
    minutes AS MATERIALIZED (
        SELECT device_id, key, date_bin(interval '1 minute', {ts}, timestamptz 'epoch') AS bucket,
               count(*) AS n, sum(value) AS sum, min(value) AS min, max(value) AS max
        FROM {source} GROUP BY 1, 2, 3
    ),
    minute_rollups AS (
        INSERT INTO ingest_rollup_1m AS r (device_id, key, bucket, n, sum, min, max)
        SELECT * FROM minutes ORDER BY 1, 2, 3 {upsert}
    )
    INSERT INTO ingest_rollup_1h AS r (device_id, key, bucket, n, sum, min, max)
    SELECT device_id, key, date_bin(interval '1 hour', bucket, timestamptz 'epoch'),
           sum(n), sum(sum), min(min), max(max)
    FROM minutes GROUP BY 1, 2, 3 ORDER BY 1, 2, 3 {upsert}
"""
# Latest values, then the devices' last_seen, the order a device's deletion locks them in, so the two
# cannot deadlock. RETURNING names the devices that still exist: this one lookup per device stands in for
# the foreign key's lookup per reading (migration 0004).
_PG_LATEST_AND_SEEN = """
    WITH latest AS (
        INSERT INTO ingest_latestvalue (device_id, key, ts, value, text)
        SELECT d, k, timestamptz 'epoch' + t * interval '1 millisecond', v, x
        FROM unnest(%(d)s::bigint[], %(k)s::text[], %(t)s::bigint[], %(v)s::float8[], %(x)s::text[])
             AS u(d, k, t, v, x)
        ORDER BY d, k
        ON CONFLICT (device_id, key) DO UPDATE
        SET ts = EXCLUDED.ts, value = EXCLUDED.value, text = EXCLUDED.text
        WHERE ingest_latestvalue.ts < EXCLUDED.ts
        RETURNING 1
    ),
    seen AS (
        UPDATE devices_device AS d SET last_seen = GREATEST(d.last_seen, %(seen)s)
        FROM (SELECT id FROM devices_device WHERE id = ANY(%(ids)s::bigint[]) ORDER BY id FOR NO KEY UPDATE) AS l
        WHERE d.id = l.id AND (SELECT count(*) FROM latest) >= 0
        RETURNING d.id
    )
    SELECT id FROM seen
"""
_INSERT = f"INSERT INTO ingest_reading (device_id, key, ts, value) {_PG_SELECT}"
_ROLLUPS_STAGED = _PG_ROLLUPS.format(
    ts="timestamptz 'epoch' + ts * interval '1 millisecond'", source="hub_staging", upsert=_ROLLUP_UPSERT
)
_ROLLUPS_INSERTED = _PG_ROLLUPS.format(ts="ts", source="inserted", upsert=_ROLLUP_UPSERT)
# Rows in (device_id, key, ts) order everywhere: two transactions never wait for each other's rows
# crosswise. A batch without resends goes in with a plain INSERT (about half the time of ON CONFLICT …
# RETURNING); a unique violation rolls back to the savepoint and the batch takes _PG_APPLY_RESENT.
_PG_APPLY = f"""
    SAVEPOINT hub_fast;
    {_INSERT};
    RELEASE SAVEPOINT hub_fast;
    WITH {_ROLLUPS_STAGED};
    {_PG_LATEST_AND_SEEN}
"""
# Resends: only the rows actually inserted (RETURNING skips conflicts) are rolled up.
_PG_APPLY_RESENT = f"""
    ROLLBACK TO SAVEPOINT hub_fast;
    WITH inserted AS ({_INSERT} ON CONFLICT DO NOTHING RETURNING device_id, key, ts, value), {_ROLLUPS_INSERTED};
    {_PG_LATEST_AND_SEEN}
"""
# TimescaleDB: its continuous aggregates roll up; the writer stores readings and latest values only.
_PG_APPLY_TIMESCALE = f"""
    {_INSERT} ON CONFLICT DO NOTHING;
    {_PG_LATEST_AND_SEEN}
"""


def _copy_text(rows: Sequence[tuple[int, str, int, float]]) -> str:
    # Keys match [A-Za-z0-9_.-] and values are finite floats: nothing needs COPY escaping.
    return "".join([f"{d}\t{k}\t{t}\t{v!r}\n" for d, k, t, v in rows])


class PostgresBackend:
    """COPY into a per-connection temp table, then one round trip of statements, then COMMIT.

    The COPY needs no turn, so it overlaps the previous write; the statements run in one round trip,
    so a write waits for the event loop (busy parsing in a loaded hub) once, not once per statement.
    """

    def __init__(self, conninfo: str, *, pool_size: int = 2) -> None:
        self.max_in_flight = pool_size
        self.resends = 0  # batches that took the ON CONFLICT path
        self._timescale: bool | None = None  # readings in a hypertable: decided on the first connection
        self._pool = AsyncConnectionPool(
            conninfo, min_size=pool_size, max_size=pool_size, open=False, timeout=5.0, configure=self._configure
        )

    @staticmethod
    async def _configure(conn: psycopg.AsyncConnection) -> None:
        await conn.execute(_PG_STAGING)
        await conn.commit()

    async def open(self) -> None:
        # wait=False: a database that is down at start-up is retried by the pool, not fatal.
        await self._pool.open(wait=False)

    async def write(self, batch: Batch, turn: Turn = ALONE) -> None:
        try:
            async with self._pool.connection() as conn, conn.transaction():
                if self._timescale is None:
                    self._timescale = await _hypertable(conn)
                cur = psycopg.AsyncClientCursor(conn)  # several statements with parameters in one round trip
                if batch.rows:
                    async with cur.copy("COPY hub_staging (device_id, key, ts, value) FROM STDIN") as copy:
                        await copy.write(_copy_text(batch.rows))
                await turn.to_apply()
                found = await self._apply(cur, batch)
                turn.applied()
                if missing := set(batch.device_ids) - found:
                    raise DevicesGone(missing)  # rolls the transaction back
                await turn.to_commit()
        finally:
            turn.applied()

    async def _apply(self, cur: psycopg.AsyncClientCursor, batch: Batch) -> set[int]:
        latest = batch.latest
        params = {
            "d": [r.device_id for r in latest],
            "k": [r.key for r in latest],
            "t": [r.ts for r in latest],
            "v": [r.value for r in latest],
            "x": [r.text for r in latest],
            "seen": batch.seen_at,
            "ids": list(batch.device_ids),
        }
        if self._timescale:
            await cur.execute(_PG_APPLY_TIMESCALE if batch.rows else _PG_LATEST_AND_SEEN, params)
        elif not batch.rows:
            await cur.execute(_PG_LATEST_AND_SEEN, params)
        else:
            try:
                await cur.execute(_PG_APPLY, params)
            except psycopg.errors.UniqueViolation:
                self.resends += 1
                await cur.execute(_PG_APPLY_RESENT, params)
        while cur.nextset():  # the device ids come from the last statement
            pass
        return {row[0] for row in await cur.fetchall()}

    async def close(self) -> None:
        await self._pool.close()

    def is_transient(self, exc: BaseException) -> bool:
        # Connection loss, deadlocks, pool timeouts: retry the same idempotent batch.
        return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError | PoolTimeout | OSError)

    def refuses(self, exc: BaseException) -> bool:
        # SQLSTATE class 22 (data exception: a NUL in text, a sum out of double range, ...) or a string the
        # driver cannot encode: the same batch fails the same way every time, so retrying it whole is futile.
        return isinstance(exc, psycopg.DataError | UnicodeError)


async def _hypertable(conn: psycopg.AsyncConnection) -> bool:
    """The readings table is a hypertable: TimescaleDB's continuous aggregates keep the rollups."""
    for probe in (EXTENSION_CREATED, READING_HYPERTABLE):
        if await (await conn.execute(probe)).fetchone() is None:
            return False
    return True


_SQLITE_INSERT = "INSERT OR IGNORE INTO ingest_reading (device_id, key, ts, value) VALUES (?, ?, ?, ?)"
_SQLITE_LATEST = """
    INSERT INTO ingest_latestvalue (device_id, key, ts, value, text) VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (device_id, key) DO UPDATE
    SET ts = excluded.ts, value = excluded.value, text = excluded.text
    WHERE excluded.ts > ingest_latestvalue.ts
"""
_SQLITE_SEEN = "UPDATE devices_device SET last_seen = max(coalesce(last_seen, ''), ?) WHERE id = ? RETURNING id"


class SqliteBackend:
    """The embedded default: the same batches through executemany on one connection in a worker thread."""

    max_in_flight = 1

    def __init__(self, path: str) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None

    async def open(self) -> None:
        uri = self._path.startswith("file:")
        self._conn = sqlite3.connect(self._path, uri=uri, timeout=20, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")

    async def write(self, batch: Batch, turn: Turn = ALONE) -> None:
        try:
            await turn.to_apply()
            await turn.to_commit()  # one connection: the previous write is over, wholly
            await asyncio.to_thread(self._write, batch)
        finally:
            turn.applied()

    def _write(self, batch: Batch) -> None:
        assert self._conn is not None, "open() first"  # noqa: S101
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(_SQLITE_INSERT, [(d, k, sqlite_ts(t), v) for d, k, t, v in batch.rows])
            conn.executemany(
                _SQLITE_LATEST, [(r.device_id, r.key, sqlite_ts(r.ts), r.value, r.text) for r in batch.latest]
            )
            seen = str(batch.seen_at.astimezone(UTC).replace(tzinfo=None))
            found = {conn.execute(_SQLITE_SEEN, (seen, device_id)).fetchone() for device_id in batch.device_ids}
            if missing := set(batch.device_ids) - {row[0] for row in found if row is not None}:
                raise DevicesGone(missing)
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

    def refuses(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.DataError | UnicodeError)


def backend_for(dialect: Dialect) -> Backend:
    """The writer's backend for this process's database."""
    from django.db import connections

    settings_dict = connections["default"].settings_dict
    if dialect.vendor == "postgresql":
        return PostgresBackend(postgres_conninfo(settings_dict))
    return SqliteBackend(str(settings_dict["NAME"]))
