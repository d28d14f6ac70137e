"""The read side: every query returning stored readings, latest values or rollups.

Raw ranges, epoch-aligned aggregates (in SQL), live charts' windows, latest values, the dashboards' stream catch-up
(CSV export: history/export.py). Engine differences come from the storage engine (storage/engines.py). Buckets are
aligned to the epoch (UTC) and the range is widened to whole buckets, so a bucket's value does not depend on where
the range starts, and rollups (whole minutes/hours) give the same numbers as raw rows. On PostgreSQL, aggregates
at whole minutes or hours read the rollups (ingest_rollup_1m/1h: tables kept by the writer, or TimescaleDB
continuous aggregates); everything else reads raw readings.
"""

import math
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db import DataError, connection, transaction
from django.db.models import Count, OuterRef, Subquery

from core.epoch import epoch_ms, from_epoch_ms
from core.protocol import WireReading, wire_value
from storage.engines import engine
from storage.models import LatestValue, Reading

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
    if engine().rollups and interval % HOUR_MS == 0:
        return "ingest_rollup_1h"
    if engine().rollups and interval % MINUTE_MS == 0:
        return "ingest_rollup_1m"
    return "ingest_reading"


def _fetch(sql: str, params: dict) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def raw_statement(query: HistoryQuery, key: str) -> tuple[str, dict]:
    """SQL and parameters of one key's raw page: [ts_ms, value] rows."""
    d = engine()
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
    d = engine()
    source = aggregate_source(query.interval)
    wide = d.exact if exact else str
    if source == "ingest_reading":
        time_column = "ts"
        columns = f"avg({wide('value')}) AS a, min(value) AS mn, max(value) AS mx, sum({wide('value')}) AS s"
        columns += ", count(*) AS n"
    else:
        time_column = "bucket"
        columns = f"sum({wide('sum')}) / sum(n) AS a, min(min) AS mn, max(max) AS mx, sum({wide('sum')}) AS s"
        columns += ", sum(n) AS n"
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
        with transaction.atomic():  # a savepoint: the exact query may follow in the same transaction
            rows = _fetch(*aggregate_statement(query))
    except DataError:  # a sum or an average beyond a double (readings near ±1e300, or stored before that limit)
        rows = _fetch(*aggregate_statement(query, exact=True))
    for row in rows:
        point = {"ts": int(row[1]), "value": _finite(row[pick]) if query.agg != "COUNT" else int(row[6])}
        if band:
            point["min"], point["max"] = row[3], row[4]
        result[row[0]].append(point)
    return result


# Answers as JSON text built by the database (storage/engine.py `json_agg`): the API's answers, whose encoding in
# Python held the GIL, and with it the event loop acknowledging devices, for tens of milliseconds each.


@dataclass(frozen=True, slots=True)
class PointsJson:
    count: int
    first: int | None  # the smallest and largest ts among them (None: no point)
    last: int | None
    text: str  # a JSON array


def points_json(
    *,
    device_id: int,
    key: str,
    start: int,
    end: int,
    limit: int,
    newest_first: bool = False,
    oldest_first_out: bool = False,
    pairs: bool = False,
) -> PointsJson:
    """Up to `limit` raw readings of one key in [start, end), the oldest or the newest, as a JSON array of
    {"ts", "value"} objects (`pairs`: of [ts, value] arrays) in the same order (`oldest_first_out`: oldest first
    whichever were taken), with their count and ts range."""
    d = engine()
    taken = "DESC" if newest_first else "ASC"
    given = "ASC" if oldest_first_out else taken
    element = d.json_array(["t", "v"]) if pairs else d.json_object([("ts", "t"), ("value", "v")])
    sql = f"""
        SELECT count(*), min(t), max(t), {d.json_agg(element, f"t {given}")} FROM (
            SELECT t, v FROM (
                SELECT {d.epoch_ms("ts")} AS t, value AS v FROM ingest_reading
                WHERE device_id = %(device)s AND key = %(key)s AND ts >= %(start)s AND ts < %(end)s
                ORDER BY ts {taken} LIMIT %(limit)s
            ) AS taken ORDER BY t {given}
        ) AS page
    """  # noqa: S608 - fixed fragments only
    params = {"device": device_id, "key": key, "start": d.ts(start), "end": d.ts(end), "limit": limit}
    count, first, last, text = _fetch(sql, params)[0]
    return PointsJson(count, first, last, text)


def aggregate_json(query: HistoryQuery, *, band: bool = False, pairs: bool = False) -> dict[str, str]:
    """Per key, the JSON array of its buckets: {"ts", "value"} objects (+ "min"/"max" with band), or with `pairs`
    [bucket start, min, max] arrays (a live window's)."""
    try:
        with transaction.atomic():  # a savepoint: the exact query may follow in the same transaction
            rows = _fetch(*_aggregate_json_statement(query, band=band, pairs=pairs))
    except DataError:  # a sum or an average beyond a double (readings near ±1e300, or stored before that limit)
        rows = _fetch(*_aggregate_json_statement(query, band=band, pairs=pairs, exact=True))
    found = dict(rows)
    return {key: found.get(key, "[]") for key in query.keys}


def _aggregate_json_statement(query: HistoryQuery, *, band: bool, pairs: bool, exact: bool = False) -> tuple[str, dict]:
    inner, params = aggregate_statement(query, exact=exact)
    d = engine()
    if pairs:
        element = d.json_array(["b", "mn", "mx"])
    else:
        value = "n" if query.agg == "COUNT" else d.finite({"AVG": "a", "MIN": "mn", "MAX": "mx", "SUM": "s"}[query.agg])
        element = d.json_object([("ts", "b"), ("value", value), *([("min", "mn"), ("max", "mx")] if band else [])])
    sql = f"SELECT key, {d.json_agg(element, 'b')} FROM ({inner}) AS buckets GROUP BY key"  # noqa: S608
    return sql, params


# Decimation of the live pages (docs/dashboards.md, "Whole window at any rate").
WINDOW_TAIL_POINTS = 2_000  # newest raw readings per key a live chart keeps at full resolution
_FINE_INTERVALS_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500]


def window_interval(start: int, end: int, pixels: int) -> int:
    """The bucket of a live chart `pixels` wide over [start, end): the finest nice interval giving at most one
    bucket per pixel. From 20 s up it rounds to whole minutes where rollups exist (a 6-hour window at 1,000
    readings/s would otherwise aggregate 20 million raw rows; minute rollups give one pair per 2-3 pixels)."""
    interval = next((ms for ms in _FINE_INTERVALS_MS if -(-(end - start) // ms) <= pixels), None)
    interval = interval or interval_auto(start, end, target=pixels)
    if engine().rollups and 20_000 <= interval < MINUTE_MS:
        return MINUTE_MS
    return interval


def _finite(value: float | Decimal | None) -> float | None:
    """A double for JSON and CSV; null for a sum beyond a double's range (never Infinity, which JSON lacks).
    `value` is a float, or a Decimal from the exact path."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def keys_of_device(device_id: int) -> list[str]:
    """Numeric keys the device has ever reported (from its latest values)."""
    return list(
        LatestValue.objects.filter(device_id=device_id, value__isnull=False)
        .order_by("key")
        .values_list("key", flat=True)
    )


def keys_of_devices(device_ids: Collection[int]) -> dict[str, int]:
    """Numeric key -> how many of the devices have reported it (the compare view's default keys)."""
    rows = LatestValue.objects.filter(device_id__in=device_ids, value__isnull=False).values("key")
    return dict(rows.annotate(n=Count("device_id")).order_by("key").values_list("key", "n"))


def device_keys(device_id: int) -> list[str]:
    """Every key the device has stored, numeric and text."""
    return list(LatestValue.objects.filter(device_id=device_id).values_list("key", flat=True))


def readings_latest(device_id: int) -> dict[str, dict]:
    """A device's newest value per key: {"ts", "value"} (text values as strings)."""
    rows = LatestValue.objects.filter(device_id=device_id).order_by("key").values_list("key", "ts", "value", "text")
    return {key: {"ts": epoch_ms(ts), "value": text if value is None else value} for key, ts, value, text in rows}


def latest_wire_by_device(*, device_ids: Collection[int] | None = None) -> dict[int, dict[str, WireReading]]:
    """Each device's (every device's, or those of `device_ids`) newest value per key as [ts, key, value]: the
    fleet page's rows."""
    latest: dict[int, dict[str, WireReading]] = {}
    rows = LatestValue.objects.all() if device_ids is None else LatestValue.objects.filter(device_id__in=device_ids)
    for device_id, key, ts, value, text in rows.values_list("device_id", "key", "ts", "value", "text"):
        latest.setdefault(device_id, {})[key] = [epoch_ms(ts), key, wire_value(value, text)]
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


def readings_since(*, device_id: int, since: int, limit: int) -> list[list]:
    """The stream's catch-up: at most `limit` committed numeric readings with ts > since, oldest first, as
    [ts, key, value]."""
    rows = (
        Reading.objects.filter(device_id=device_id, ts__gt=from_epoch_ms(since))
        .order_by("ts", "key")
        .values_list("ts", "key", "value")[:limit]
    )
    return [[epoch_ms(ts), key, value] for ts, key, value in rows]
