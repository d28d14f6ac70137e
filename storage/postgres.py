"""PostgreSQL: every line of the hub's PostgreSQL-specific SQL, for the writer, the read side and retention.

The writer's batches go straight into the readings table (binary COPY, or arrays when small), then one round trip of
statements, then COMMIT; the minute and hour rollup tables are kept by the same transaction, from the batch's minute
aggregates. A batch holding a resend is staged in a per-connection temp table and stored with ON CONFLICT DO NOTHING.
Where the readings table is a TimescaleDB hypertable, the `Extension` (storage/timescale.py) takes over what it does
differently: its continuous aggregates roll up, whole chunks are dropped by retention, compression follows the
settings.

Writes may overlap (one connection each). The writer orders them with a `Turn`: a batch's statements start only
after the previous batch's have run, and it commits only after the previous one committed, so overlapping batches
behave as if written one after the other.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import psycopg
from django.db import OperationalError, connection, connections, transaction
from psycopg.conninfo import make_conninfo
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout

from core.epoch import from_epoch_ms
from core.spreadsheet import cell_safe
from storage.engine import (
    ALONE,
    RAW,
    ROLLUPS,
    Backend,
    Batch,
    DevicesGone,
    RawRange,
    Reads,
    ReadTimedOut,
    Turn,
    delete_in_batches,
)


def postgres_conninfo(settings_dict: dict[str, Any]) -> str:
    """A libpq conninfo for Django's connection settings (so tests hit Django's test database)."""
    params = {
        "dbname": settings_dict.get("NAME"),
        "user": settings_dict.get("USER"),
        "password": settings_dict.get("PASSWORD"),
        "host": settings_dict.get("HOST"),
        "port": str(settings_dict.get("PORT") or ""),
    }
    extra = {k: v for k, v in (settings_dict.get("OPTIONS") or {}).items() if isinstance(v, str | int)}
    return make_conninfo("", **{k: v for k, v in params.items() if v}, **extra)  # "": no conninfo string to merge


_PG_STAGING = (
    "CREATE TEMP TABLE IF NOT EXISTS hub_staging "
    "(device_id bigint, key text, ts bigint, value float8) ON COMMIT DELETE ROWS"
)
_ROLLUP_UPSERT = """
    ON CONFLICT (device_id, key, bucket) DO UPDATE
    SET n = r.n + EXCLUDED.n, sum = r.sum + EXCLUDED.sum,
        min = LEAST(r.min, EXCLUDED.min), max = GREATEST(r.max, EXCLUDED.max)
"""
# Plain PostgreSQL (TimescaleDB keeps its own): a batch's minute aggregates, then the minute rollups upserted from
# them and the hour rollups from those minutes, each rollup row touched once per batch. The minutes come from the
# hub (`minute_aggregates`: the batch's rows went straight into the readings table), or, for a batch that held a
# resend, from the rows actually inserted (RETURNING skips conflicts): a resent reading is never counted twice.
_MINUTES_OF_ARRAYS = """
    minutes AS MATERIALIZED (
        SELECT device_id, key, timestamptz 'epoch' + b * interval '1 millisecond' AS bucket, n, sum, min, max
        FROM unnest(%(md)s::bigint[], %(mk)s::text[], %(mb)s::bigint[], %(mn)s::bigint[], %(ms)s::float8[],
                    %(mi)s::float8[], %(mx)s::float8[]) AS u(device_id, key, b, n, sum, min, max)
    )
"""
_MINUTES_OF_INSERTED = """
    minutes AS MATERIALIZED (
        SELECT device_id, key, date_bin(interval '1 minute', ts, timestamptz 'epoch') AS bucket,
               count(*) AS n, sum(value) AS sum, min(value) AS min, max(value) AS max
        FROM inserted GROUP BY 1, 2, 3
    )
"""
_ROLLUPS_OF_MINUTES = f"""
    minute_rollups AS (
        INSERT INTO ingest_rollup_1m AS r (device_id, key, bucket, n, sum, min, max)
        SELECT * FROM minutes ORDER BY 1, 2, 3 {_ROLLUP_UPSERT}
    )
    INSERT INTO ingest_rollup_1h AS r (device_id, key, bucket, n, sum, min, max)
    SELECT device_id, key, date_bin(interval '1 hour', bucket, timestamptz 'epoch'),
           sum(n), sum(sum), min(min), max(max)
    FROM minutes GROUP BY 1, 2, 3 ORDER BY 1, 2, 3 {_ROLLUP_UPSERT}
"""  # noqa: S608 - module constants only
# Latest values, then the devices' last_seen, the order a device's deletion locks them in, so the two
# cannot deadlock. RETURNING names the devices that still exist: this one lookup per device stands in for
# the foreign key's lookup per reading (migration 0004).
LATEST_AND_SEEN = """
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
# A batch that held a resend: its rows staged in hub_staging, then in with ON CONFLICT DO NOTHING (rows in (device_id,
# key, ts) order everywhere: two transactions never wait for each other's rows crosswise).
INSERT_STAGED = """
    INSERT INTO ingest_reading (device_id, key, ts, value)
    SELECT device_id, key, timestamptz 'epoch' + ts * interval '1 millisecond', value FROM hub_staging
    ORDER BY device_id, key, ts
    ON CONFLICT DO NOTHING
"""
# A small batch travels as four arrays in the round trip of its statements, not in a COPY of its own: under load each
# round trip also waits for the hub's busy event loop, and a COPY is two (issue 26).
INLINE_ROWS = 2_000  # up to this many rows a batch goes in inline; more go by COPY
_ROWS_OF_ARRAYS = "unnest(%(rd)s::bigint[], %(rk)s::text[], %(rt)s::bigint[], %(rv)s::float8[]) AS u(d, k, t, v)"
_INSERT_INLINE = f"""
    INSERT INTO ingest_reading (device_id, key, ts, value)
    SELECT d, k, timestamptz 'epoch' + t * interval '1 millisecond', v FROM {_ROWS_OF_ARRAYS} ORDER BY d, k, t
"""  # noqa: S608 - module constants only
_STAGE_INLINE = f"INSERT INTO hub_staging (device_id, key, ts, value) SELECT * FROM {_ROWS_OF_ARRAYS};"  # noqa: S608
# The rows go straight into the readings table under a savepoint: a plain INSERT or COPY (a hypertable's COPY takes
# TimescaleDB's multi-insert path), about twice the rows per database core of INSERT … SELECT … ON CONFLICT from a
# staging table (issue 26). A resend's unique violation rolls back to the savepoint and the batch takes `resent`.
_DIRECT_INLINE = f"BEGIN; SAVEPOINT hub_fast; {_INSERT_INLINE}; RELEASE SAVEPOINT hub_fast;"
_RESENT_INLINE = f"ROLLBACK TO SAVEPOINT hub_fast; {_STAGE_INLINE}"


@dataclass(frozen=True, slots=True)
class WriteSql:
    """An engine's statements for a batch with numeric rows (one round trip each); a batch of text values only takes
    LATEST_AND_SEEN on every engine."""

    after_rows: str  # once the rows are in the readings table
    resent: str  # a batch that held a resend, once its rows are staged in hub_staging
    minutes: bool = False  # `after_rows` takes the batch's minute aggregates (plain PostgreSQL's rollups)


PLAIN = WriteSql(
    after_rows=f"WITH {_MINUTES_OF_ARRAYS}, {_ROLLUPS_OF_MINUTES}; {LATEST_AND_SEEN}",
    resent=f"""
        WITH inserted AS ({INSERT_STAGED} RETURNING device_id, key, ts, value),
        {_MINUTES_OF_INSERTED}, {_ROLLUPS_OF_MINUTES};
        {LATEST_AND_SEEN}
    """,
    minutes=True,
)


class Extension(Protocol):
    """What takes over part of the storage where the schema uses it (TimescaleDB: storage/timescale.py)."""

    write: WriteSql

    async def active(self, conn: psycopg.AsyncConnection[Any]) -> bool:
        """The readings table uses the extension (asked once per writer, on its first connection)."""
        ...

    def active_in(self, cursor: Any) -> bool:
        """The same, on a cursor of Django's connection."""
        ...

    def retention_apply(self, cutoffs: dict[str, datetime]) -> dict[str, int]: ...
    def configure(self, cursor: Any) -> None: ...
    def start_checked(self, cursor: Any) -> None: ...


# Binary COPY, each row formatted by psycopg's C formatter: 2.4 times faster than text (a float's repr costs more
# than its 8 bytes), hub and server together (issue 26).
_COPY_STAGING = "COPY hub_staging (device_id, key, ts, value) FROM STDIN (FORMAT BINARY)"
_STAGING_TYPES = ("int8", "text", "int8", "float8")
# The readings table's timestamptz in its binary form, an int64 of microseconds since 2000-01-01 (PostgreSQL's
# timestamptz_recv): the hub sends that integer as an int8 instead of building a datetime per row.
_COPY_READINGS = "COPY ingest_reading (device_id, key, ts, value) FROM STDIN (FORMAT BINARY)"
_PG_EPOCH_MS = 946_684_800_000  # 2000-01-01T00:00:00Z


async def _copy_staged(cur: psycopg.AsyncClientCursor[Any], rows: Sequence[tuple[int, str, int, float]]) -> None:
    async with cur.copy(_COPY_STAGING) as copy:
        copy.set_types(_STAGING_TYPES)
        await _copy_rows(copy, rows)


async def _copy_direct(cur: psycopg.AsyncClientCursor[Any], rows: Sequence[tuple[int, str, int, float]]) -> None:
    """`rows`, sorted, into the readings table."""
    async with cur.copy(_COPY_READINGS) as copy:
        copy.set_types(_STAGING_TYPES)
        await _copy_rows(copy, [(d, k, (ts - _PG_EPOCH_MS) * 1000, v) for d, k, ts, v in rows])


async def _copy_rows(copy: psycopg.AsyncCopy, rows: Sequence[tuple[int, str, int, float]]) -> None:
    # The copy's formatter row by row, awaiting only the full buffers it hands back: AsyncCopy.write_row costs a
    # coroutine per row, 40 % of the loop's time.
    write_row = copy.formatter.write_row
    for row in rows:
        if data := write_row(row):
            await copy.write(data)


class PostgresBackend:
    """A batch's rows straight into the readings table, its rollups, latest values and devices in one round trip
    of statements, then COMMIT.

    Rows go in after the previous write's statements ran (a `Turn`): a small batch as arrays in the statements' own
    round trip, which also begins the transaction; a large one by binary COPY first. The statements run in one
    round trip, so a write waits for the event loop (busy parsing in a loaded hub) once, not once per statement.
    """

    def __init__(
        self, conninfo: str, *, extension: Extension, pool_size: int = 2, inline_rows: int = INLINE_ROWS
    ) -> None:
        self.max_in_flight = pool_size
        self._inline_rows = inline_rows
        self.resends = 0  # batches that took the ON CONFLICT path
        self._extension = extension
        self._sql: WriteSql | None = None  # decided on the first connection: the database may be down at start
        # Autocommit: the hub sends BEGIN with a flush's first statements, not in a round trip of its own as psycopg's
        # transactions do (each round trip of a flush also waits for the busy event loop).
        self._pool = AsyncConnectionPool(
            conninfo,
            min_size=pool_size,
            max_size=pool_size,
            open=False,
            timeout=5.0,
            configure=self._configure,
            kwargs={"autocommit": True},
        )

    @staticmethod
    async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.execute(_PG_STAGING)

    async def open(self) -> None:
        # wait=False: a database that is down at start-up is retried by the pool, not fatal.
        await self._pool.open(wait=False)

    async def write(self, batch: Batch, turn: Turn = ALONE) -> None:
        try:
            async with self._pool.connection() as conn:
                if self._sql is None:
                    self._sql = self._extension.write if await self._extension.active(conn) else PLAIN
                cur = psycopg.AsyncClientCursor(conn)  # several statements with parameters in one round trip
                try:
                    await turn.to_apply()
                    found = await self._apply(cur, batch, self._sql)
                    turn.applied()
                    if missing := set(batch.device_ids) - found:
                        raise DevicesGone(missing)
                    await turn.to_commit()
                    await cur.execute("COMMIT")
                except Exception:
                    await _rolled_back(conn)
                    raise
        finally:
            turn.applied()

    async def _apply(self, cur: psycopg.AsyncClientCursor[Any], batch: Batch, sql: WriteSql) -> set[int]:
        """The rows under a savepoint, then the statements; a resend's unique violation takes `sql.resent`."""
        params = _latest_params(batch)
        if not batch.rows:
            await cur.execute("BEGIN;" + LATEST_AND_SEEN, params)
            return await _devices_found(cur)
        # In (device_id, key, ts) order, as everywhere: two hub processes never wait for each other's rows crosswise,
        # and the minutes are summed in the order the rows are stored.
        rows = sorted(batch.rows)
        if sql.minutes:
            params |= minute_aggregates(rows)
        inline = len(rows) <= self._inline_rows
        try:
            if inline:
                params |= _row_params(rows)
                await cur.execute(_DIRECT_INLINE + sql.after_rows, params)
            else:
                await cur.execute("BEGIN; SAVEPOINT hub_fast")
                await _copy_direct(cur, rows)
                await cur.execute("RELEASE SAVEPOINT hub_fast;" + sql.after_rows, params)
        except psycopg.errors.UniqueViolation:
            self.resends += 1
            if inline:
                await cur.execute(_RESENT_INLINE + sql.resent, params)
            else:
                await cur.execute("ROLLBACK TO SAVEPOINT hub_fast")
                await _copy_staged(cur, rows)
                await cur.execute(sql.resent, params)
        return await _devices_found(cur)

    async def close(self) -> None:
        await self._pool.close()

    def is_transient(self, exc: BaseException) -> bool:
        # Connection loss, deadlocks, pool timeouts: retry the same idempotent batch.
        return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError | PoolTimeout | OSError)

    def refuses(self, exc: BaseException) -> bool:
        # SQLSTATE class 22 (data exception: a NUL in text, a sum out of double range, ...) or a string the
        # driver cannot encode: the same batch fails the same way every time, so retrying it whole is futile.
        return isinstance(exc, psycopg.DataError | UnicodeError)


# A flush's arrays go as PostgreSQL array literals built by str.join (a loop in C): psycopg's client-side binding
# quotes a list element by element in Python, 0.82 ms of a 64-row flush's sixteen arrays against 0.26 ms (issue 26).
def int_array(values: Iterable[int]) -> str:
    return "{" + ",".join(map(str, values)) + "}"


def float_array(values: Sequence[float | None]) -> str:
    """repr() is a float's shortest exact form: PostgreSQL reads back the same double."""
    if None in values:
        return "{" + ",".join("NULL" if v is None else repr(v) for v in values) + "}"
    return "{" + ",".join(map(repr, values)) + "}"


def text_array(values: Sequence[str]) -> str:
    """Every element quoted (a key may be spelled NULL); the key grammar (core/keys.py) has no quote or backslash,
    so these are escaped only when some other caller's text holds one."""
    if not values:
        return "{}"
    joined = '","'.join(values)
    if "\\" in joined or joined.count('"') != 2 * (len(values) - 1):
        joined = '","'.join(v.replace("\\", "\\\\").replace('"', '\\"') for v in values)
    return '{"' + joined + '"}'


def _latest_params(batch: Batch) -> dict[str, object]:
    latest = batch.latest
    return {
        "d": int_array([r.device_id for r in latest]),
        "k": text_array([r.key for r in latest]),
        "t": int_array([r.ts for r in latest]),
        "v": float_array([r.value for r in latest]),
        "x": [r.text for r in latest],
        "seen": batch.seen_at,
        "ids": int_array(batch.device_ids),
    }


def minute_aggregates(rows: Sequence[tuple[int, str, int, float]]) -> dict[str, str]:
    """Count, sum, min and max of `rows` per (device, key, minute), as the arrays of _MINUTES_OF_ARRAYS.

    `rows` come sorted, in the order they are stored: the same float sums as SQL's over them."""
    minutes: dict[tuple[int, str, int], list[Any]] = {}
    for device_id, key, ts, value in rows:
        bucket = (device_id, key, ts - ts % 60_000)
        aggregate = minutes.get(bucket)
        if aggregate is None:
            minutes[bucket] = [1, value, value, value]
        else:
            aggregate[0] += 1
            aggregate[1] += value
            if value < aggregate[2]:
                aggregate[2] = value
            elif value > aggregate[3]:
                aggregate[3] = value
    buckets, aggregates = list(minutes), list(minutes.values())
    return {
        "md": int_array([b[0] for b in buckets]),
        "mk": text_array([b[1] for b in buckets]),
        "mb": int_array([b[2] for b in buckets]),
        "mn": int_array([a[0] for a in aggregates]),
        "ms": float_array([a[1] for a in aggregates]),
        "mi": float_array([a[2] for a in aggregates]),
        "mx": float_array([a[3] for a in aggregates]),
    }


def _row_params(rows: Sequence[tuple[int, str, int, float]]) -> dict[str, object]:
    """The rows as four arrays (a small batch goes in with its statements)."""
    devices, keys, stamps, values = zip(*rows, strict=True)
    return {"rd": int_array(devices), "rk": text_array(keys), "rt": int_array(stamps), "rv": float_array(values)}


async def _devices_found(cur: psycopg.AsyncClientCursor[Any]) -> set[int]:
    """The devices that still exist: the last statement's rows (LATEST_AND_SEEN)."""
    while cur.nextset():
        pass
    return {row[0] for row in await cur.fetchall()}


async def _rolled_back(conn: psycopg.AsyncConnection[Any]) -> None:
    """End a failed flush's transaction; a connection that cannot is one the pool replaces."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        with contextlib.suppress(psycopg.Error, OSError):
            await conn.execute("ROLLBACK")


# One page of an export as one text value: PostgreSQL formats the lines (as COPY's csv format would) and joins them,
# so the hub reads one value per page. COPY … TO STDOUT sends a message per row, and taking 10,000 of them per page
# in Python kept a hub core half busy during an export and the devices' acks waiting for the GIL (bench/reads.py).
# Keys need no quoting: they are [A-Za-z0-9_.-] (ingest/parsing.py).
_CSV_PAGE = """
    SELECT count(*), {last}(t), coalesce(string_agg(
        t || ',' || to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') || ',' || %(cell)s || ','
        || value || E'\\n', '' ORDER BY ts {order}), '')
    FROM (
        SELECT ts, (extract(epoch FROM ts) * 1000)::bigint AS t, value FROM ingest_reading
        WHERE device_id = %(device)s AND key = %(key)s AND ts >= %(start)s AND ts < %(end)s
        ORDER BY ts {order} LIMIT %(size)s
    ) AS page
"""
CSV_PAGE_ROWS = 10_000


class PostgresReads:
    """Streaming reads on a pool of their own: a page of CSV_PAGE_ROWS rows at a time, formatted by PostgreSQL, on
    a connection taken for that page only. A client that reads slowly (or not at all) holds no connection,
    transaction or cursor while it waits: between pages the export holds one page of text.

    A page is fetched whole on a thread of the pool's own, off the event loop: an export cancelled meanwhile (its
    client gone) lets the page finish there, and the connection goes back to the pool clean (cancelled in the
    middle of an asynchronous COPY, the connection was left reading, idle in its transaction). Every statement stops
    after `timeout` seconds; a session left idle in a transaction is ended by the server after the same time."""

    def __init__(self, conninfo: str, *, size: int, timeout: float) -> None:
        ms = max(1, round(timeout * 1000))
        options = f"-c statement_timeout={ms} -c idle_in_transaction_session_timeout={ms}"
        options += " -c max_parallel_workers_per_gather=0"  # a read keeps to one core (docs/history.md)
        self._pool = ConnectionPool(conninfo, kwargs={"options": options}, min_size=0, max_size=size, open=False)
        self._threads = ThreadPoolExecutor(max_workers=size, thread_name_prefix="hub-reads")

    async def open(self) -> None:
        self._pool.open(wait=False)  # no connection yet (min_size=0): returns at once

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._threads, self._pool.close)
        self._threads.shutdown(wait=False)

    def _page(self, statement: str, params: dict[str, object]) -> tuple[int, int | None, bytes]:
        """(rows, the ts of the last, their CSV lines)."""
        with self._pool.connection() as conn:
            rows, last, text = conn.execute(statement, params).fetchone() or (0, None, "")
        return rows, last, text.encode()

    async def csv_raw(self, query: RawRange, key: str) -> AsyncIterator[bytes]:
        newest_first = query.newest_first
        statement = _CSV_PAGE.format(order="DESC" if newest_first else "ASC", last="min" if newest_first else "max")
        start, end = query.start, query.end
        remaining = query.limit
        loop = asyncio.get_running_loop()
        while remaining > 0 and start < end:
            size = min(remaining, CSV_PAGE_ROWS)
            params = {"cell": cell_safe(key), "device": query.device_id, "key": key, "size": size}
            params |= {"start": from_epoch_ms(start), "end": from_epoch_ms(end)}
            rows, last, page = await loop.run_in_executor(self._threads, self._page, statement, params)
            if rows:
                yield page
            remaining -= rows
            if rows < size or last is None:
                return
            start, end = (start, last) if newest_first else (last + 1, end)


def _json_number(expression: str) -> str:
    return f"coalesce(({expression})::text, 'null')"


_RETENTION_LOCK = 0x6875_6272  # pg advisory lock: one process applies retention at a time
_RETENTION_BATCH = 50_000


class Postgres:
    """PostgreSQL, and TimescaleDB through its `extension` where the readings table is a hypertable."""

    vendor = "postgresql"
    embedded = False
    rollups = True
    skip_locked = True

    def __init__(self, extension: Extension) -> None:
        self.extension = extension

    def ts(self, ms: int) -> datetime:
        return from_epoch_ms(ms)

    def epoch_ms(self, column: str) -> str:
        # Computed by the server: decoding 10,000 timestamptz values into datetimes (Django's loader takes
        # psycopg's pure-Python path) cost ~40 ms of a ~50 ms raw page (bench/history.py).
        return f"(extract(epoch FROM {column}) * 1000)::bigint"

    def bucket_ms(self, column: str) -> str:
        return self.epoch_ms(f"date_bin(%(interval)s * interval '1 millisecond', {column}, timestamptz 'epoch')")

    def any_of(self, param: str) -> str:
        return f"= ANY(%({param})s)"

    def exact(self, column: str) -> str:
        return f"{column}::numeric"

    def array(self, values: Sequence[object]) -> list[object]:
        return list(values)

    # JSON by text concatenation, not json_build_object/json_agg: a page of 5,000 points took 11 ms instead of 40
    # (and has no spaces). The values are numbers or NULL, and PostgreSQL writes integers and finite doubles as
    # JSON numbers (shortest exact form, as json_build_object does: the same float8 output).
    def json_object(self, fields: Sequence[tuple[str, str]]) -> str:
        parts = [f"'{',' if i else '{'}\"{name}\":' || {_json_number(value)}" for i, (name, value) in enumerate(fields)]
        return "(" + " || ".join(parts) + " || '}')"

    def json_array(self, items: Sequence[str]) -> str:
        return "('[' || " + " || ',' || ".join(_json_number(item) for item in items) + " || ']')"

    def json_agg(self, element: str, order: str) -> str:
        return f"('[' || coalesce(string_agg({element}, ',' ORDER BY {order}), '') || ']')"

    def finite(self, expression: str) -> str:
        return f"CASE WHEN abs({expression}) <= 1.7976931348623157e308 THEN ({expression})::float8 END"

    async def ping(self, timeout: float) -> None:
        # A fresh connection with its own timeout: a pool's wait would measure the pool, not the database.
        conninfo = postgres_conninfo(connection.settings_dict)
        async with await psycopg.AsyncConnection.connect(conninfo, connect_timeout=max(1, int(timeout))) as conn:
            await conn.execute("SELECT 1")

    def writer_backend(self, conninfo: str | None = None, *, pool_size: int = 2) -> Backend:
        """On the default database, or on `conninfo` (tests and benches: through a proxy, another server)."""
        conninfo = conninfo or postgres_conninfo(connection.settings_dict)
        return PostgresBackend(conninfo, extension=self.extension, pool_size=pool_size)

    def reads(self, *, size: int, timeout: float) -> Reads:
        return PostgresReads(postgres_conninfo(connection.settings_dict), size=size, timeout=timeout)

    @contextlib.contextmanager
    def bounded(self, timeout: float) -> Iterator[None]:
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("SET LOCAL statement_timeout = %s", [max(1, round(timeout * 1000))])
                cursor.execute("SET LOCAL max_parallel_workers_per_gather = 0")  # a read: one core at most
                yield
        except OperationalError as exc:
            if isinstance(exc.__cause__, psycopg.errors.QueryCanceled):
                raise ReadTimedOut(f"the query ran past {timeout:g} s") from None
            raise

    def retention_apply(self, cutoffs: dict[str, datetime]) -> dict[str, int]:
        with connection.cursor() as cursor:
            if self.extension.active_in(cursor):
                return self.extension.retention_apply(cutoffs)
        return {
            relation: delete_in_batches(_delete_older(relation, column), {"cutoff": cutoff}, _RETENTION_BATCH)
            for relation, column in (RAW, *ROLLUPS)
            if (cutoff := cutoffs.get(relation)) is not None
        }

    def retention_exclusive(self) -> bool:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [_RETENTION_LOCK])
            return bool(cursor.fetchone()[0])

    def retention_release(self) -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [_RETENTION_LOCK])

    def migrated(self, using: str = "default") -> None:
        with connections[using].cursor() as cursor:
            if self.extension.active_in(cursor):
                self.extension.configure(cursor)

    def start_checked(self) -> None:
        with connection.cursor() as cursor:
            self.extension.start_checked(cursor)


def _delete_older(relation: str, column: str) -> str:
    """Up to %(batch)s rows of `relation` whose `column` < %(cutoff)s."""
    return (
        f"DELETE FROM {relation} WHERE ctid = ANY(ARRAY("  # noqa: S608 - fixed identifiers only
        f"SELECT ctid FROM {relation} WHERE {column} < %(cutoff)s LIMIT %(batch)s))"
    )
