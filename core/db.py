"""The database dialect: every difference between PostgreSQL and SQLite in the hub's own SQL, chosen once.

The ORM hides most of them. What it cannot express (epoch-aligned buckets, key lists, COPY, batched deletes,
skip-locked claims, a probe with its own timeout) is here, so no other module asks which database it runs
on. TimescaleDB is PostgreSQL here: whether the readings table is a hypertable is a property of the schema
(core/timescale.py), not of the SQL dialect. Queries use named parameters (`%(name)s`), which Django passes
to both drivers.
"""

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from functools import cache
from typing import Protocol

import orjson
import psycopg
from asgiref.sync import sync_to_async
from django.db import connection, connections
from psycopg.conninfo import make_conninfo

from core.epoch import from_epoch_ms, iso_ms
from core.registry import current_runtime


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
    return str(from_epoch_ms(ts_ms).replace(tzinfo=None))


class RawRange(Protocol):
    """One key's raw readings in [start, end), at most `limit`, oldest or newest first (a CSV export)."""

    device_id: int
    start: int
    end: int
    limit: int
    newest_first: bool


class Dialect(Protocol):
    vendor: str
    embedded: bool  # the no-server default (SQLite): dev-only conveniences are allowed
    rollups: bool  # minute and hour rollup relations exist
    skip_locked: bool  # SELECT … FOR UPDATE SKIP LOCKED

    def ts(self, ms: int) -> object:
        """The query parameter for a ts column at epoch milliseconds `ms`."""

    def epoch_ms(self, column: str) -> str:
        """SQL: the epoch milliseconds of a timestamp column."""

    def bucket_ms(self, column: str) -> str:
        """SQL: the start, in epoch ms, of the epoch-aligned bucket of %(interval)s ms holding `column`."""

    def any_of(self, param: str) -> str:
        """SQL after a column: it equals one of the values passed as parameter `param` (see `array`)."""

    def exact(self, column: str) -> str:
        """SQL: a double column in a type whose sums and averages cannot overflow (slower: the fallback)."""

    def array(self, values: Sequence[object]) -> object:
        """The parameter value `any_of` expects."""

    def delete_older(self, relation: str, column: str) -> str:
        """SQL: delete up to %(batch)s rows of `relation` whose `column` < %(cutoff)s (a ts parameter)."""

    async def ping(self, timeout: float) -> None:
        """Raise unless the database answers a query within `timeout` seconds."""

    def csv_raw(self, query: RawRange, key: str) -> AsyncIterator[bytes]:
        """CSV lines `ts,time,key,value` of one key's raw readings, streamed (never all in memory)."""


class Postgres:
    vendor = "postgresql"
    embedded = False
    rollups = True
    skip_locked = True

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

    def array(self, values: Sequence[object]) -> list:
        return list(values)

    def delete_older(self, relation: str, column: str) -> str:
        return (
            f"DELETE FROM {relation} WHERE ctid = ANY(ARRAY("  # noqa: S608 - fixed identifiers only
            f"SELECT ctid FROM {relation} WHERE {column} < %(cutoff)s LIMIT %(batch)s))"
        )

    async def ping(self, timeout: float) -> None:
        # A fresh connection with its own timeout: a pool's wait would measure the pool, not the database.
        conninfo = postgres_conninfo(connection.settings_dict)
        async with await psycopg.AsyncConnection.connect(conninfo, connect_timeout=max(1, int(timeout))) as conn:
            await conn.execute("SELECT 1")

    _CSV = """
        COPY (
            SELECT (extract(epoch FROM ts) * 1000)::bigint,
                   to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'), key, value
            FROM ingest_reading WHERE device_id = %s AND key = %s AND ts >= %s AND ts < %s
            ORDER BY ts {order} LIMIT %s
        ) TO STDOUT (FORMAT csv)
    """

    async def csv_raw(self, query: RawRange, key: str) -> AsyncIterator[bytes]:
        # COPY … TO STDOUT streams rows as the server produces them, formatted by PostgreSQL itself, on a
        # connection of the runtime's read pool.
        statement = self._CSV.format(order="DESC" if query.newest_first else "ASC")
        params = (query.device_id, key, from_epoch_ms(query.start), from_epoch_ms(query.end), query.limit)
        pool = current_runtime().reads
        async with pool.connection() as conn, conn.cursor() as cursor, cursor.copy(statement, params) as copy:
            async for data in copy:
                yield bytes(data)


class Sqlite:
    vendor = "sqlite"
    embedded = True
    rollups = False  # aggregates read raw rows
    skip_locked = False  # one writer at a time anyway

    def ts(self, ms: int) -> str:
        return sqlite_ts(ms)

    def epoch_ms(self, column: str) -> str:
        # Django stores 'YYYY-MM-DD HH:MM:SS[.ffffff]' (UTC): whole seconds, plus the milliseconds if any.
        seconds = f"CAST(strftime('%%s', {column}) AS INTEGER)"
        return f"({seconds} * 1000 + COALESCE(CAST(substr({column}, 21, 3) AS INTEGER), 0))"

    def bucket_ms(self, column: str) -> str:
        return f"({self.epoch_ms(column)} / %(interval)s) * %(interval)s"

    def any_of(self, param: str) -> str:
        return f"IN (SELECT value FROM json_each(%({param})s))"  # noqa: S608 - a parameter name only

    def exact(self, column: str) -> str:
        return column  # SQLite's sums do not fail: they reach infinity, which the selectors turn into null

    def array(self, values: Sequence[object]) -> str:
        return orjson.dumps(list(values)).decode()

    def delete_older(self, relation: str, column: str) -> str:
        return (
            f"DELETE FROM {relation} WHERE rowid IN ("  # noqa: S608 - fixed identifiers only
            f"SELECT rowid FROM {relation} WHERE {column} < %(cutoff)s LIMIT %(batch)s)"
        )

    async def ping(self, timeout: float) -> None:
        await asyncio.wait_for(sync_to_async(_select_1, thread_sensitive=False)(), timeout)

    _PAGE = 10_000

    async def csv_raw(self, query: RawRange, key: str) -> AsyncIterator[bytes]:
        after: str | None = None  # keyset pagination over the primary key (device, key, ts)
        remaining = query.limit
        while remaining > 0:
            page = await sync_to_async(self._page)(query, key, after, min(remaining, self._PAGE))
            if not page:
                return
            remaining -= len(page)
            after = page[-1][2]
            yield "".join(f"{ms},{iso_ms(ms)},{key},{value}\n" for ms, value, _ts in page).encode()

    def _page(self, query: RawRange, key: str, after: str | None, size: int) -> list[tuple[int, float, str]]:
        order, beyond = ("DESC", "<") if query.newest_first else ("ASC", ">")
        keyset = f"AND ts {beyond} %(after)s" if after is not None else ""
        sql = f"""
            SELECT {self.epoch_ms("ts")}, value, ts FROM ingest_reading
            WHERE device_id = %(device)s AND key = %(key)s AND ts >= %(start)s AND ts < %(end)s {keyset}
            ORDER BY ts {order} LIMIT %(size)s
        """  # noqa: S608 - fixed fragments only
        params = {"device": query.device_id, "key": key, "after": after, "size": size}
        params |= {"start": self.ts(query.start), "end": self.ts(query.end)}
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()


def _select_1() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


@cache
def dialect() -> Dialect:
    """This process's dialect, from the default database's engine (fixed for the life of the process)."""
    vendor = connections["default"].vendor
    if vendor == "postgresql":
        return Postgres()
    if vendor == "sqlite":
        return Sqlite()
    raise RuntimeError(f"unsupported database vendor {vendor!r}: use PostgreSQL or SQLite")
