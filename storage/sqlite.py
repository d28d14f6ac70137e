"""SQLite, the embedded default: every line of the hub's SQLite-specific SQL (no rollups: aggregates read raw rows).

The writer's batches go through executemany on one connection in a worker thread (WAL, so pages read while it
commits); streaming reads page through the primary key on Django's connection.
"""

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime

import orjson
from asgiref.sync import sync_to_async
from django.db import connection

from core.epoch import from_epoch_ms, iso_ms
from core.spreadsheet import cell_safe
from storage.engine import ALONE, RAW, Backend, Batch, DevicesGone, RawRange, Reads, Turn, delete_in_batches


def sqlite_ts(ts_ms: int) -> str:
    """The text Django's SQLite backend stores for a datetime (str() of the naive UTC value)."""
    return str(from_epoch_ms(ts_ms).replace(tzinfo=None))


_INSERT = "INSERT OR IGNORE INTO ingest_reading (device_id, key, ts, value) VALUES (?, ?, ?, ?)"
_LATEST = """
    INSERT INTO ingest_latestvalue (device_id, key, ts, value, text) VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (device_id, key) DO UPDATE
    SET ts = excluded.ts, value = excluded.value, text = excluded.text
    WHERE excluded.ts > ingest_latestvalue.ts
"""
_SEEN = "UPDATE devices_device SET last_seen = max(coalesce(last_seen, ''), ?) WHERE id = ? RETURNING id"


class SqliteBackend:
    """The same batches through executemany on one connection in a worker thread."""

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
            conn.executemany(_INSERT, [(d, k, sqlite_ts(t), v) for d, k, t, v in batch.rows])
            conn.executemany(_LATEST, [(r.device_id, r.key, sqlite_ts(r.ts), r.value, r.text) for r in batch.latest])
            seen = str(batch.seen_at.astimezone(UTC).replace(tzinfo=None))
            found = {conn.execute(_SEEN, (seen, device_id)).fetchone() for device_id in batch.device_ids}
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


class SqliteReads:
    """Streaming reads: keyset pages over the primary key (device, key, ts) on Django's connection."""

    _PAGE = 10_000

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def csv_raw(self, query: RawRange, key: str) -> AsyncIterator[bytes]:
        after: str | None = None
        remaining = query.limit
        while remaining > 0:
            rows, text, after = await sync_to_async(self._page)(query, key, after, min(remaining, self._PAGE))
            if not rows:
                return
            remaining -= rows
            yield text

    def _page(self, query: RawRange, key: str, after: str | None, size: int) -> tuple[int, bytes, str | None]:
        """(rows, their CSV lines, the ts the next page starts after): formatted here, in a thread, not on the
        event loop."""
        order, beyond = ("DESC", "<") if query.newest_first else ("ASC", ">")
        keyset = f"AND ts {beyond} %(after)s" if after is not None else ""
        sql = f"""
            SELECT {SQLITE.epoch_ms("ts")}, value, ts FROM ingest_reading
            WHERE device_id = %(device)s AND key = %(key)s AND ts >= %(start)s AND ts < %(end)s {keyset}
            ORDER BY ts {order} LIMIT %(size)s
        """  # noqa: S608 - fixed fragments only
        params: dict[str, int | str | None] = {"device": query.device_id, "key": key, "after": after, "size": size}
        params |= {"start": sqlite_ts(query.start), "end": sqlite_ts(query.end)}
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows: list[tuple[int, float, str]] = cursor.fetchall()  # the three columns selected above
        cell = cell_safe(key)
        text = "".join(f"{ms},{iso_ms(ms)},{cell},{value}\n" for ms, value, _ts in rows).encode()
        return len(rows), text, rows[-1][2] if rows else after


_RETENTION_BATCH = 50_000


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

    def json_object(self, fields: Sequence[tuple[str, str]]) -> str:
        return "json_object(" + ", ".join(f"'{name}', {value}" for name, value in fields) + ")"

    def json_array(self, items: Sequence[str]) -> str:
        return "json_array(" + ", ".join(items) + ")"

    def json_agg(self, element: str, order: str) -> str:
        return f"coalesce(json_group_array({element}), '[]')"  # in the order of the subquery's rows

    def finite(self, expression: str) -> str:
        return f"CASE WHEN abs({expression}) <= 1.7976931348623157e308 THEN {expression} END"

    async def ping(self, timeout: float) -> None:
        await asyncio.wait_for(sync_to_async(_select_1, thread_sensitive=False)(), timeout)

    def writer_backend(self) -> Backend:
        return SqliteBackend(str(connection.settings_dict["NAME"]))

    def reads(self, *, size: int, timeout: float) -> Reads:
        return SqliteReads()  # one file, one process: no pool to bound, and SQLite has no statement timeout

    def bounded(self, timeout: float) -> AbstractContextManager[None]:
        return contextlib.nullcontext()  # the embedded default: one operator, and SQLite has no statement timeout

    def retention_apply(self, cutoffs: dict[str, datetime]) -> dict[str, int]:
        relation, column = RAW  # no rollups here
        if relation not in cutoffs:
            return {}
        sql = (
            f"DELETE FROM {relation} WHERE rowid IN ("  # noqa: S608 - fixed identifiers only
            f"SELECT rowid FROM {relation} WHERE {column} < %(cutoff)s LIMIT %(batch)s)"
        )
        cutoff = sqlite_ts(round(cutoffs[relation].timestamp() * 1000))
        return {relation: delete_in_batches(sql, {"cutoff": cutoff}, _RETENTION_BATCH)}

    def retention_exclusive(self) -> bool:
        return True  # one process only

    def retention_release(self) -> None:
        return None

    def migrated(self, using: str = "default") -> None:
        return None

    def start_checked(self) -> None:
        return None


def _select_1() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


SQLITE = Sqlite()
