"""History selectors: raw ranges, bucketed aggregates (in SQL), latest values, CSV rows.

Buckets are aligned to the epoch (UTC) and the range is widened to whole buckets, so a bucket's value does
not depend on where the range starts, and rollups (whole minutes/hours) give the same numbers as raw rows.
On PostgreSQL, aggregates at whole minutes or hours read the rollups (ingest_rollup_1m/1h: tables kept by
the writer, or TimescaleDB continuous aggregates); everything else reads raw readings.
"""

from collections.abc import AsyncIterator
from dataclasses import dataclass

import psycopg
from asgiref.sync import sync_to_async
from django.db import connection

from core.epoch import epoch_ms, from_epoch_ms
from ingest.backends import postgres_conninfo, sqlite_ts
from ingest.models import LatestValue, Reading

AGGREGATES = ("AVG", "MIN", "MAX", "SUM", "COUNT", "NONE")
TARGET_POINTS = 2000
MINUTE_MS = 60_000
HOUR_MS = 3_600_000
_NICE_INTERVALS_MS = [
    ms * unit
    for unit, steps in ((1000, (1, 2, 5, 10, 15, 30)), (MINUTE_MS, (1, 2, 5, 10, 15, 30)), (HOUR_MS, (1, 2, 3, 6, 12)))
    for ms in steps
] + [d * 86_400_000 for d in (1, 2, 7, 14, 30)]


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    device_id: int
    keys: tuple[str, ...]
    start: int  # ms, inclusive
    end: int  # ms, exclusive
    agg: str = "NONE"
    interval: int | None = None  # ms; required unless agg is NONE
    limit: int = 100  # raw points per key
    newest_first: bool = False


def interval_auto(start: int, end: int, *, target: int = TARGET_POINTS) -> int:
    """The smallest 'nice' interval that keeps a series at or below `target` buckets."""
    span = max(end - start, 1)
    for interval in _NICE_INTERVALS_MS:
        if -(-span // interval) <= target:
            return interval
    return -(-span // target // 86_400_000) * 86_400_000


def bucket_bounds(start: int, end: int, interval: int) -> tuple[int, int]:
    """The range widened to whole epoch-aligned buckets."""
    return start - start % interval, -(-end // interval) * interval


def readings_raw(query: HistoryQuery) -> dict[str, list[dict]]:
    """Up to `limit` raw points per key in [start, end), oldest or newest first."""
    dialect = _dialect()
    return {key: [{"ts": ts, "value": value} for ts, value in dialect.raw_rows(query, key)] for key in query.keys}


def readings_aggregate(query: HistoryQuery, *, band: bool = False) -> dict[str, list[dict]]:
    """One point per non-empty bucket per key: {"ts": bucket start, "value": agg} (+ "min"/"max" with band)."""
    assert query.interval, "aggregates need an interval"  # noqa: S101 - guarded by the API's validation
    start, end = bucket_bounds(query.start, query.end, query.interval)
    sql, params = _dialect().aggregate_sql(query, start, end)
    result: dict[str, list[dict]] = {key: [] for key in query.keys}
    pick = {"AVG": 2, "MIN": 3, "MAX": 4, "SUM": 5, "COUNT": 6}[query.agg]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for row in cursor.fetchall():
            point = {"ts": int(row[1]), "value": row[pick] if query.agg != "COUNT" else int(row[6])}
            if band:
                point["min"], point["max"] = row[3], row[4]
            result[row[0]].append(point)
    return result


def aggregate_source(interval: int) -> str:
    """Which relation serves buckets of `interval` ms on PostgreSQL."""
    if interval % HOUR_MS == 0:
        return "ingest_rollup_1h"
    if interval % MINUTE_MS == 0:
        return "ingest_rollup_1m"
    return "ingest_reading"


class _Postgres:
    # Epoch milliseconds computed by the server: decoding 10,000 timestamptz values into datetimes (Django's
    # loader takes psycopg's pure-Python path) cost ~40 ms of a ~50 ms raw page (bench/history.py).
    _RAW = """
        SELECT (extract(epoch FROM ts) * 1000)::bigint, value FROM ingest_reading
        WHERE device_id = %s AND key = %s AND ts >= %s AND ts < %s ORDER BY ts {order} LIMIT %s
    """

    def raw_rows(self, query: HistoryQuery, key: str) -> list[tuple[int, float]]:
        sql = self._RAW.format(order="DESC" if query.newest_first else "ASC")
        with connection.cursor() as cursor:
            cursor.execute(
                sql, [query.device_id, key, from_epoch_ms(query.start), from_epoch_ms(query.end), query.limit]
            )
            return cursor.fetchall()

    def aggregate_sql(self, query: HistoryQuery, start: int, end: int) -> tuple[str, list]:
        source = aggregate_source(query.interval)
        bucket = "date_bin(%s * interval '1 millisecond', {col}, timestamptz 'epoch')"
        if source == "ingest_reading":
            sql = f"""
                SELECT key, extract(epoch FROM b) * 1000, avg(value), min(value), max(value), sum(value), count(*)
                FROM (SELECT key, value, {bucket.format(col="ts")} AS b FROM ingest_reading
                      WHERE device_id = %s AND key = ANY(%s) AND ts >= %s AND ts < %s) r
                GROUP BY key, b ORDER BY key, b
            """  # noqa: S608 - only fixed identifiers are interpolated
        else:
            sql = f"""
                SELECT key, extract(epoch FROM b) * 1000, sum(sum) / sum(n), min(min), max(max), sum(sum), sum(n)
                FROM (SELECT key, n, sum, min, max, {bucket.format(col="bucket")} AS b FROM {source}
                      WHERE device_id = %s AND key = ANY(%s) AND bucket >= %s AND bucket < %s) r
                GROUP BY key, b ORDER BY key, b
            """  # noqa: S608 - only fixed identifiers are interpolated
        return sql, [query.interval, query.device_id, list(query.keys), from_epoch_ms(start), from_epoch_ms(end)]


class _Sqlite:
    # Django stores SQLite datetimes as 'YYYY-MM-DD HH:MM:SS[.ffffff]' (UTC): seconds plus milliseconds.
    _MS = "(CAST(strftime('%%s', ts) AS INTEGER) * 1000 + COALESCE(CAST(substr(ts, 21, 3) AS INTEGER), 0))"

    def raw_rows(self, query: HistoryQuery, key: str) -> list[tuple[int, float]]:
        rows = (
            Reading.objects.filter(
                device_id=query.device_id, key=key, ts__gte=from_epoch_ms(query.start), ts__lt=from_epoch_ms(query.end)
            )
            .order_by("-ts" if query.newest_first else "ts")
            .values_list("ts", "value")[: query.limit]
        )
        return [(epoch_ms(ts), value) for ts, value in rows]

    def aggregate_sql(self, query: HistoryQuery, start: int, end: int) -> tuple[str, list]:
        marks = ", ".join("%s" for _ in query.keys)
        sql = f"""
            SELECT key, ({self._MS} / %s) * %s AS b, avg(value), min(value), max(value), sum(value), count(*)
            FROM ingest_reading WHERE device_id = %s AND key IN ({marks}) AND ts >= %s AND ts < %s
            GROUP BY key, b ORDER BY key, b
        """  # noqa: S608 - only placeholders are interpolated
        return sql, [
            query.interval,
            query.interval,
            query.device_id,
            *query.keys,
            sqlite_ts(start),
            sqlite_ts(end),
        ]


def _dialect() -> _Postgres | _Sqlite:
    return _Postgres() if connection.vendor == "postgresql" else _Sqlite()


def keys_of_device(device_id: int) -> list[str]:
    """Numeric keys the device has ever reported (from its latest values)."""
    return list(
        LatestValue.objects.filter(device_id=device_id, value__isnull=False)
        .order_by("key")
        .values_list("key", flat=True)
    )


def readings_latest(device_id: int) -> dict[str, dict]:
    rows = LatestValue.objects.filter(device_id=device_id).order_by("key").values_list("key", "ts", "value", "text")
    return {key: {"ts": epoch_ms(ts), "value": text if value is None else value} for key, ts, value, text in rows}


CSV_HEADER = b"ts,time,key,value\n"
CSV_BAND_HEADER = b"ts,time,key,value,min,max\n"
_CSV_CHUNK = 10_000


def _iso(ms: int) -> str:
    return from_epoch_ms(ms).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _csv_line(cells: list) -> str:
    return ",".join("" if c is None else str(c) for c in cells) + "\n"


async def csv_stream(query: HistoryQuery, *, band: bool = False) -> AsyncIterator[bytes]:
    """Exactly what the JSON API returns for `query`, as CSV, streamed in chunks (never all in memory)."""
    yield CSV_BAND_HEADER if band else CSV_HEADER
    if query.agg != "NONE":
        data = await sync_to_async(readings_aggregate)(query, band=band)
        for key, points in data.items():
            for i in range(0, len(points), _CSV_CHUNK):
                yield "".join(
                    _csv_line([p["ts"], _iso(p["ts"]), key, p["value"], *([p["min"], p["max"]] if band else [])])
                    for p in points[i : i + _CSV_CHUNK]
                ).encode()
    elif connection.vendor == "postgresql":
        async for chunk in _csv_raw_postgres(query):
            yield chunk
    else:
        for key in query.keys:
            after: int | None = None
            remaining = query.limit
            while remaining > 0:
                page = await sync_to_async(_raw_page)(query, key, after, min(remaining, _CSV_CHUNK))
                if not page:
                    break
                remaining -= len(page)
                after = page[-1][0]
                yield "".join(_csv_line([ts, _iso(ts), key, value]) for ts, value in page).encode()


def _raw_page(query: HistoryQuery, key: str, after: int | None, size: int) -> list[tuple[int, float]]:
    """Keyset pagination over the primary key (device, key, ts)."""
    rows = Reading.objects.filter(
        device_id=query.device_id, key=key, ts__gte=from_epoch_ms(query.start), ts__lt=from_epoch_ms(query.end)
    )
    if after is not None:
        rows = (
            rows.filter(ts__lt=from_epoch_ms(after)) if query.newest_first else rows.filter(ts__gt=from_epoch_ms(after))
        )
    rows = rows.order_by("-ts" if query.newest_first else "ts").values_list("ts", "value")[:size]
    return [(epoch_ms(ts), value) for ts, value in rows]


_PG_CSV = """
    COPY (
        SELECT (extract(epoch FROM ts) * 1000)::bigint,
               to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'), key, value
        FROM ingest_reading WHERE device_id = %s AND key = %s AND ts >= %s AND ts < %s
        ORDER BY ts {order} LIMIT %s
    ) TO STDOUT (FORMAT csv)
"""


_CSV_FLUSH_BYTES = 64 * 1024


async def _csv_raw_postgres(query: HistoryQuery) -> AsyncIterator[bytes]:
    # COPY … TO STDOUT streams rows as the server produces them, formatted by PostgreSQL itself. libpq hands
    # them over one row at a time; sending each as its own ASGI message capped the export near 100,000
    # rows/s (bench/history.py), so rows are gathered into chunks of about 64 KiB.
    statement = _PG_CSV.format(order="DESC" if query.newest_first else "ASC")
    conninfo = postgres_conninfo(connection.settings_dict)
    async with await psycopg.AsyncConnection.connect(conninfo) as conn, conn.cursor() as cursor:
        pending, size = [], 0
        for key in query.keys:
            params = (query.device_id, key, from_epoch_ms(query.start), from_epoch_ms(query.end), query.limit)
            async with cursor.copy(statement, params) as copy:
                async for data in copy:
                    pending.append(data)
                    size += len(data)
                    if size >= _CSV_FLUSH_BYTES:
                        yield b"".join(pending)
                        pending, size = [], 0
        if pending:
            yield b"".join(pending)
