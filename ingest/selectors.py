"""The read side of what ingest stores: every query returning readings, latest values or rollups.

Raw ranges, epoch-aligned aggregates (in SQL), latest values, the dashboards' stream catch-up, CSV export.
Vendor differences come from the one dialect (core/db.py). Buckets are aligned to the epoch (UTC) and the
range is widened to whole buckets, so a bucket's value does not depend on where the range starts, and
rollups (whole minutes/hours) give the same numbers as raw rows. On PostgreSQL, aggregates at whole
minutes or hours read the rollups (ingest_rollup_1m/1h: tables kept by the writer, or TimescaleDB
continuous aggregates); everything else reads raw readings.
"""

import math
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DataError, connection
from django.db.models import Count, OuterRef, Subquery

from core.db import dialect
from core.epoch import epoch_ms, from_epoch_ms, iso_ms
from core.protocol import WireReading
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


def aggregate_source(interval: int) -> str:
    """Which relation serves buckets of `interval` ms."""
    if dialect().rollups and interval % HOUR_MS == 0:
        return "ingest_rollup_1h"
    if dialect().rollups and interval % MINUTE_MS == 0:
        return "ingest_rollup_1m"
    return "ingest_reading"


def _fetch(sql: str, params: dict) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def raw_statement(query: HistoryQuery, key: str) -> tuple[str, dict]:
    """SQL and parameters of one key's raw page: [ts_ms, value] rows."""
    d = dialect()
    sql = f"""
        SELECT {d.epoch_ms("ts")}, value FROM ingest_reading
        WHERE device_id = %(device)s AND key = %(key)s AND ts >= %(start)s AND ts < %(end)s
        ORDER BY ts {"DESC" if query.newest_first else "ASC"} LIMIT %(limit)s
    """  # noqa: S608 - fixed fragments only
    params = {"device": query.device_id, "key": key, "start": d.ts(query.start), "end": d.ts(query.end)}
    return sql, params | {"limit": query.limit}


def readings_raw(query: HistoryQuery) -> dict[str, list[dict]]:
    """Up to `limit` raw points per key in [start, end), oldest or newest first."""
    return {key: [{"ts": ts, "value": value} for ts, value in _fetch(*raw_statement(query, key))] for key in query.keys}


def aggregate_statement(query: HistoryQuery, *, exact: bool = False) -> tuple[str, dict]:
    """SQL and parameters of an aggregate: [key, bucket_ms, avg, min, max, sum, count] rows. `exact`: sums and
    averages in a type that cannot overflow (PostgreSQL refuses a double sum beyond ±1.8e308)."""
    assert query.interval, "aggregates need an interval"  # noqa: S101 - guarded by the API's validation
    start, end = bucket_bounds(query.start, query.end, query.interval)
    d = dialect()
    source = aggregate_source(query.interval)
    wide = d.exact if exact else str
    if source == "ingest_reading":
        time_column = "ts"
        columns = f"avg({wide('value')}), min(value), max(value), sum({wide('value')}), count(*)"
    else:
        time_column = "bucket"
        columns = f"sum({wide('sum')}) / sum(n), min(min), max(max), sum({wide('sum')}), sum(n)"
    sql = f"""
        SELECT key, {d.bucket_ms(time_column)} AS b, {columns} FROM {source}
        WHERE device_id = %(device)s AND key {d.any_of("keys")}
          AND {time_column} >= %(start)s AND {time_column} < %(end)s
        GROUP BY key, b ORDER BY key, b
    """  # noqa: S608 - fixed fragments only
    params = {"interval": query.interval, "device": query.device_id, "keys": d.array(query.keys)}
    return sql, params | {"start": d.ts(start), "end": d.ts(end)}


def readings_aggregate(query: HistoryQuery, *, band: bool = False) -> dict[str, list[dict]]:
    """One point per non-empty bucket per key: {"ts": bucket start, "value": agg} (+ "min"/"max" with band)."""
    result: dict[str, list[dict]] = {key: [] for key in query.keys}
    pick = {"AVG": 2, "MIN": 3, "MAX": 4, "SUM": 5, "COUNT": 6}[query.agg]
    try:
        rows = _fetch(*aggregate_statement(query))
    except DataError:  # a sum or an average beyond a double (readings near ±1e300, or stored before that limit)
        rows = _fetch(*aggregate_statement(query, exact=True))
    for row in rows:
        point = {"ts": int(row[1]), "value": _finite(row[pick]) if query.agg != "COUNT" else int(row[6])}
        if band:
            point["min"], point["max"] = row[3], row[4]
        result[row[0]].append(point)
    return result


def _finite(value: object) -> float | None:
    """A double for JSON and CSV; null for a sum beyond a double's range (never Infinity, which JSON lacks)."""
    if value is None:
        return None
    number = float(value)  # type: ignore[arg-type] - a float, or a Decimal from the exact path
    return number if math.isfinite(number) else None


def keys_of_device(device_id: int) -> list[str]:
    """Numeric keys the device has ever reported (from its latest values)."""
    return list(
        LatestValue.objects.filter(device_id=device_id, value__isnull=False)
        .order_by("key")
        .values_list("key", flat=True)
    )


def device_keys(device_id: int) -> list[str]:
    """Every key the device has stored, numeric and text."""
    return list(LatestValue.objects.filter(device_id=device_id).values_list("key", flat=True))


def readings_latest(device_id: int) -> dict[str, dict]:
    """A device's newest value per key: {"ts", "value"} (text values as strings)."""
    rows = LatestValue.objects.filter(device_id=device_id).order_by("key").values_list("key", "ts", "value", "text")
    return {key: {"ts": epoch_ms(ts), "value": text if value is None else value} for key, ts, value, text in rows}


def latest_wire_by_device() -> dict[int, dict[str, WireReading]]:
    """Every device's newest value per key as [ts, key, value]: the fleet page's snapshot."""
    latest: dict[int, dict[str, WireReading]] = {}
    for device_id, key, ts, value, text in LatestValue.objects.values_list("device_id", "key", "ts", "value", "text"):
        latest.setdefault(device_id, {})[key] = [epoch_ms(ts), key, text if value is None else value]
    return latest


def latest_heard(keys: Collection[str]) -> dict[tuple[int, str], int]:
    """(device id, key) -> ms of the newest reading of that key (no-data alerts)."""
    rows = LatestValue.objects.filter(key__in=keys).values_list("device_id", "key", "ts")
    return {(device_id, key): epoch_ms(ts) for device_id, key, ts in rows}


def readings_per_minute(*, since: datetime) -> dict[int, int]:
    """device id -> numeric readings with ts >= since: one index range scan per (device, key) seen since then."""
    recent = (
        Reading.objects.filter(device_id=OuterRef("device_id"), key=OuterRef("key"), ts__gte=since)
        .order_by()
        .values("device_id")
        .annotate(n=Count("*"))
        .values("n")
    )
    counts: dict[int, int] = {}
    rows = LatestValue.objects.filter(ts__gte=since, value__isnull=False).annotate(n=Subquery(recent))
    for device_id, n in rows.values_list("device_id", "n"):
        counts[device_id] = counts.get(device_id, 0) + (n or 0)
    return counts


def readings_recent(*, device_id: int, since: datetime, keys: Sequence[str] = (), limit: int = 20_000) -> list[list]:
    """The newest `limit` numeric readings of a device (of `keys`, if given) since `since`, oldest first, as
    [ts_ms, key, value]. Newest, not oldest: the page's history must end where the stream's catch-up starts."""
    rows = Reading.objects.filter(device_id=device_id, ts__gte=since)
    if keys:
        rows = rows.filter(key__in=keys)
    newest = list(rows.order_by("-ts", "-key").values_list("ts", "key", "value")[:limit])
    return [[epoch_ms(ts), key, value] for ts, key, value in reversed(newest)]


def readings_since(*, device_id: int, since: int, limit: int | None = None) -> list[list]:
    """The stream's catch-up: committed numeric readings with ts > since, oldest first, as [ts, key, value]."""
    limit = limit or settings.HUB_STREAM_CATCHUP_LIMIT
    rows = (
        Reading.objects.filter(device_id=device_id, ts__gt=from_epoch_ms(since))
        .order_by("ts", "key")
        .values_list("ts", "key", "value")[:limit]
    )
    return [[epoch_ms(ts), key, value] for ts, key, value in rows]


CSV_HEADER = b"ts,time,key,value\n"
CSV_BAND_HEADER = b"ts,time,key,value,min,max\n"
_CSV_CHUNK = 10_000
_CSV_FLUSH_BYTES = 64 * 1024


def _csv_line(cells: list) -> str:
    return ",".join("" if c is None else str(c) for c in cells) + "\n"


async def csv_stream(
    query: HistoryQuery, *, band: bool = False, aggregated: dict[str, list[dict]] | None = None
) -> AsyncIterator[bytes]:
    """Exactly what the JSON API returns for `query`, as CSV, streamed in chunks (never all in memory).

    `aggregated`: the aggregate, queried before the response started (so a failure is an error answer, not a
    200 whose body ends early). A raw export that fails midway raises: the server then closes the connection
    without the chunked body's last chunk, and the client sees the export was cut short."""
    yield CSV_BAND_HEADER if band else CSV_HEADER
    if query.agg != "NONE":
        data = aggregated if aggregated is not None else await sync_to_async(readings_aggregate)(query, band=band)
        for key, points in data.items():
            for i in range(0, len(points), _CSV_CHUNK):
                yield "".join(
                    _csv_line([p["ts"], iso_ms(p["ts"]), key, p["value"], *([p["min"], p["max"]] if band else [])])
                    for p in points[i : i + _CSV_CHUNK]
                ).encode()
        return
    # The dialect hands rows over as they come (one at a time from PostgreSQL's COPY); sending each as its
    # own ASGI message capped the export near 100,000 rows/s (bench/history.py): chunks of about 64 KiB.
    pending, size = [], 0
    for key in query.keys:
        async for data in dialect().csv_raw(query, key):
            pending.append(data)
            size += len(data)
            if size >= _CSV_FLUSH_BYTES:
                yield b"".join(pending)
                pending, size = [], 0
    if pending:
        yield b"".join(pending)
