"""History API against real PostgreSQL: aggregates equal Python's, rollups, limits, errors, CSV, plans."""

import csv
import io
import random
import statistics
import time
from datetime import UTC, datetime

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.db import connection

from api.credentials import api_token_create
from core.epoch import now_ms
from devices.services import DeviceIdentity
from history.selectors import HistoryQuery, aggregate_source, aggregate_statement, interval_auto
from ingest.parsing import Reading as R
from ingest.writer import Writer
from tests.conftest import person
from tests.engines import refresh_aggregates

pytestmark = [pytest.mark.usefixtures("postgres"), pytest.mark.engines]

HOUR = 3_600_000
MINUTE = 60_000


async def store(writer: Writer, device, readings: list[R]) -> None:
    """Through the real writer, so rollups are maintained exactly as in production."""
    futures = [
        await writer.submit(DeviceIdentity(device.id, device.key), readings[i : i + 1000])
        for i in range(0, len(readings), 1000)
    ]
    for future in futures:
        await future


@pytest.fixture
async def api(live_hub, transactional_db):
    user = await sync_to_async(person)("analyst", password="pw")
    token = await sync_to_async(api_token_create)(user=user)
    async with httpx.AsyncClient(
        base_url=live_hub.http, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as client:
        yield client


def hour_floor(ms: int) -> int:
    return ms - ms % HOUR


@pytest.fixture
async def dataset(make_device, live_hub):
    """Two keys, irregular timestamps over 5 hours with a 1-hour hole, values with decimals."""
    device = await sync_to_async(make_device)()
    rng = random.Random(7)
    t0 = hour_floor(now_ms()) - 6 * HOUR
    readings, ts = [], t0 + 1234
    while ts < t0 + 5 * HOUR:
        if not (t0 + 2 * HOUR <= ts < t0 + 3 * HOUR):  # an empty hour
            readings += [R(ts, "temp", round(rng.uniform(-10, 40), 3)), R(ts, "volt", round(rng.uniform(3, 3.6), 4))]
        ts += rng.randint(1_000, 40_000)
    readings.append(R(t0 + HOUR, "temp", 99.5))  # exactly on a bucket edge: belongs to the later bucket
    await store(live_hub.runtime.writer, device, readings)
    return device, t0, readings


def expected(readings: list[R], key: str, start: int, end: int, interval: int, agg: str) -> list[dict]:
    lo, hi = start - start % interval, -(-end // interval) * interval
    buckets: dict[int, list[float]] = {}
    for r in readings:
        if r.key == key and lo <= r.ts < hi:
            buckets.setdefault(r.ts - r.ts % interval, []).append(r.value)
    fn = {"AVG": statistics.fmean, "MIN": min, "MAX": max, "SUM": sum, "COUNT": len}[agg]
    return [{"ts": b, "value": fn(vs)} for b, vs in sorted(buckets.items())]


def same_points(got: list[dict], want: list[dict]) -> bool:
    return [p["ts"] for p in got] == [p["ts"] for p in want] and all(
        g["value"] == pytest.approx(w["value"], rel=1e-9, abs=1e-9) for g, w in zip(got, want, strict=True)
    )


async def test_aggregates_equal_python_on_every_source(api, dataset):
    """Every aggregate, from raw rows (45 s), minute rollups and hour rollups, equals Python's on the same data."""
    device, t0, readings = dataset
    start, end = t0 + 17 * MINUTE + 5, t0 + 5 * HOUR - 3  # unaligned: widened to whole buckets
    for interval in (45_000, MINUTE, 5 * MINUTE, HOUR, 2 * HOUR):
        for agg in ("AVG", "MIN", "MAX", "SUM", "COUNT"):
            response = await api.get(
                f"/api/v1/devices/{device.key}/telemetry",
                params={"keys": "temp,volt", "start": start, "end": end, "interval": interval, "agg": agg},
            )
            assert response.status_code == 200, response.text
            body = response.json()
            for key in ("temp", "volt"):
                want = expected(readings, key, start, end, interval, agg)
                assert same_points(body["data"][key], want), (key, agg, interval, aggregate_source(interval))
            if interval <= HOUR:  # a 2-hour bucket may straddle the empty hour
                hole = [p for p in body["data"]["temp"] if t0 + 2 * HOUR <= p["ts"] < t0 + 3 * HOUR]
                assert hole == [], "empty buckets are absent"


async def test_a_late_reading_changes_the_rolled_up_bucket_and_a_resend_does_not(api, dataset, live_hub):
    """Rollups reflect late readings in already-aggregated buckets; resent readings are not counted twice."""
    device, t0, readings = dataset
    params = {"keys": "temp", "start": t0, "end": t0 + HOUR, "interval": HOUR, "agg": "COUNT"}
    url = f"/api/v1/devices/{device.key}/telemetry"
    before = (await api.get(url, params=params)).json()["data"]["temp"][0]["value"]
    late = R(t0 + 30 * MINUTE + 1, "temp", -50.0)
    await store(live_hub.runtime.writer, device, [late])
    await store(live_hub.runtime.writer, device, [late, *readings[:50]])  # a resend: stored once, rolled up once
    after = (await api.get(url, params=params)).json()["data"]["temp"][0]["value"]
    assert after == before + 1
    low = (await api.get(url, params={**params, "agg": "MIN"})).json()["data"]["temp"][0]["value"]
    assert low == -50.0


async def test_raw_points_order_and_limit(api, dataset):
    device, t0, readings = dataset
    temps = sorted(r.ts for r in readings if r.key == "temp")
    url = f"/api/v1/devices/{device.key}/telemetry"
    oldest = (await api.get(url, params={"keys": "temp", "start": t0, "end": t0 + 6 * HOUR, "limit": 5})).json()
    assert [p["ts"] for p in oldest["data"]["temp"]] == temps[:5]
    newest = await api.get(url, params={"keys": "temp", "start": t0, "end": t0 + 6 * HOUR, "limit": 3, "order": "desc"})
    assert [p["ts"] for p in newest.json()["data"]["temp"]] == temps[::-1][:3]


async def test_interval_is_chosen_to_keep_at_most_2000_points(api, dataset):
    device, t0, _ = dataset
    assert interval_auto(0, 86_400_000) == MINUTE
    assert interval_auto(0, 30 * 86_400_000) == 30 * MINUTE
    assert interval_auto(0, 3_650 * 86_400_000) == 2 * 86_400_000
    body = (
        await api.get(
            f"/api/v1/devices/{device.key}/telemetry", params={"start": t0, "end": t0 + 6 * HOUR, "agg": "AVG"}
        )
    ).json()
    assert body["interval"] == 15_000
    assert set(body["data"]) == {"temp", "volt"}, "keys default to every numeric key of the device"
    assert 0 < len(body["data"]["temp"]) <= 2000


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"start": 2000, "end": 1000}, "start"),
        ({"start": "abc"}, "start"),
        ({"end": "1e3"}, "end"),
        ({"agg": "MEDIAN"}, "agg"),
        ({"limit": 10_001}, "limit"),
        ({"keys": "nope"}, "keys"),
        ({"start": 0, "end": 4000 * 86_400_000}, "end"),
        ({"start": 0, "end": 86_400_000, "agg": "AVG", "interval": 1}, "interval"),
        ({"order": "sideways"}, "order"),
    ],
)
async def test_bad_parameters_get_400_naming_the_parameter(api, dataset, params, parameter):
    device, _, _ = dataset
    response = await api.get(f"/api/v1/devices/{device.key}/telemetry", params=params)
    assert response.status_code == 400
    assert response.json()["error"]["parameter"] == parameter


async def test_unknown_device_is_404_and_anonymous_is_401(api, live_hub):
    assert (await api.get("/api/v1/devices/ghost/telemetry")).status_code == 404
    assert (await api.get("/api/v1/devices/ghost/latest")).status_code == 404
    async with httpx.AsyncClient(base_url=live_hub.http) as anonymous:
        assert (await anonymous.get("/api/v1/devices/ghost/telemetry")).status_code == 401
        wrong = await anonymous.get("/api/v1/devices/ghost/telemetry", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401


async def test_latest_values(api, dataset):
    device, t0, readings = dataset
    latest = (await api.get(f"/api/v1/devices/{device.key}/latest")).json()["latest"]
    newest = max((r for r in readings if r.key == "volt"), key=lambda r: r.ts)
    assert latest["volt"] == {"ts": newest.ts, "value": newest.value}


async def test_csv_is_exactly_the_json_and_streams(api, dataset):
    """The CSV export holds the same points as the JSON answer, and arrives chunked (streamed)."""
    device, t0, readings = dataset
    for params in (
        {"keys": "temp,volt", "start": t0, "end": t0 + 6 * HOUR, "limit": 10_000},
        {"keys": "temp", "start": t0, "end": t0 + 6 * HOUR, "agg": "MAX", "interval": 10 * MINUTE},
    ):
        data = (await api.get(f"/api/v1/devices/{device.key}/telemetry", params=params)).json()["data"]
        async with api.stream("GET", f"/api/v1/devices/{device.key}/telemetry.csv", params=params) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/csv")
            assert "content-length" not in response.headers, "streamed, not buffered"
            text = "".join([chunk async for chunk in response.aiter_text()])
        rows = list(csv.reader(io.StringIO(text)))
        assert rows[0] == ["ts", "time", "key", "value"]
        from_csv = [(key, int(ts), float(value)) for ts, _time, key, value in rows[1:]]
        from_json = [(key, p["ts"], p["value"]) for key, points in data.items() for p in points]
        assert from_csv == from_json
        assert rows[1][1].endswith("Z"), "UTC timestamps"


async def test_a_key_a_spreadsheet_would_run_is_exported_as_text(api, live_hub, make_device):
    """Issue 22: a key starting with `-` (or `=`, `+`, `@`) goes into CSV cells with a leading `'` (OWASP), raw and
    aggregated alike; the JSON answer keeps the key as it is, and values stay numbers (a negative one too)."""
    made = await sync_to_async(make_device)()
    t0 = hour_floor(now_ms()) - 2 * HOUR
    await store(live_hub.runtime.writer, made, [R(t0 + i * 1000, "-1-1", -float(i)) for i in range(5)])
    url = f"/api/v1/devices/{made.key}/telemetry"
    for params in ({"start": t0, "end": t0 + HOUR}, {"start": t0, "end": t0 + HOUR, "agg": "SUM", "interval": HOUR}):
        assert list((await api.get(url, params=params)).json()["data"]) == ["-1-1"]
        rows = list(csv.reader(io.StringIO((await api.get(f"{url}.csv", params=params)).text)))
        assert {row[2] for row in rows[1:]} == {"'-1-1"}, rows[:3]
        assert all(float(row[3]) <= 0 for row in rows[1:]), "values are numbers, negative ones too"


async def test_buckets_and_csv_times_are_utc_whatever_the_time_zones(api, dataset, settings, monkeypatch):
    """Everything in the API is UTC: with the hub and a database session at UTC+05:30, hour and day buckets
    still start on UTC hours and midnights, and CSV times are UTC. Only the page shows local time."""
    settings.TIME_ZONE = "Asia/Kolkata"  # a half-hour offset: local alignment would show as ts % HOUR != 0
    monkeypatch.setenv("PGTZ", "Asia/Kolkata")  # the raw CSV export opens its own libpq connection
    device, t0, readings = dataset
    url = f"/api/v1/devices/{device.key}/telemetry"
    for interval in (HOUR, 86_400_000):
        params = {"keys": "temp", "start": t0, "end": t0 + 5 * HOUR, "interval": interval, "agg": "SUM"}
        points = (await api.get(url, params=params)).json()["data"]["temp"]
        assert points and all(p["ts"] % interval == 0 for p in points), "buckets aligned to UTC"
        assert same_points(points, expected(readings, "temp", t0, t0 + 5 * HOUR, interval, "SUM"))
    raw = {"keys": "temp", "start": t0, "end": t0 + 5 * HOUR, "limit": 50}
    for query in (raw, {**raw, "agg": "MAX", "interval": HOUR}):
        text = (await api.get(url + ".csv", params=query)).text
        rows = list(csv.reader(io.StringIO(text)))[1:]
        assert rows and all(time_ == utc_iso(int(ts)) for ts, time_, _key, _value in rows), rows[:3]


def utc_iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def plan(sql: str, params: list | dict) -> str:
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + sql, params)
        return "\n".join(row[0] for row in cursor.fetchall())


PLAN_FIXTURE = [
    """INSERT INTO devices_device (key, name, created_at, token_hash, broker_hash)
       SELECT 'p' || g, '', now(), md5(g::text), '' FROM generate_series(1, 50) g""",
    """INSERT INTO ingest_reading (device_id, key, ts, value)
       SELECT d.id, 'k' || (g % 4), now() - g * interval '1 second', g
       FROM devices_device d, generate_series(1, 4000) g""",
]
ROLLUPS_FILLED = {
    "postgres": """INSERT INTO ingest_rollup_1h (device_id, key, bucket, n, sum, min, max)
       SELECT device_id, key, date_bin('1 hour', ts, 'epoch'), count(*), sum(value), min(value), max(value)
       FROM ingest_reading GROUP BY 1, 2, 3 ON CONFLICT DO NOTHING""",
    "timescale": "CALL refresh_continuous_aggregate('ingest_rollup_1h', NULL, NULL)",
}


@pytest.mark.django_db(transaction=True)
def test_main_query_shapes_use_the_indexes(postgres, engine):
    """EXPLAIN: raw ranges, raw aggregates and rollup aggregates scan the primary-key indexes."""
    with connection.cursor() as cursor:
        for statement in [*PLAN_FIXTURE, ROLLUPS_FILLED[engine]]:
            cursor.execute(statement)
        cursor.execute("ANALYZE")
        cursor.execute("SELECT id FROM devices_device WHERE key = 'p7'")
        device_id = cursor.fetchone()[0]
    now = int(time.time() * 1000)
    raw = plan(
        "SELECT ts, value FROM ingest_reading WHERE device_id = %s AND key = %s AND ts >= %s AND ts < %s"
        " ORDER BY ts LIMIT 100",
        [device_id, "k1", datetime.fromtimestamp(now / 1000 - 600, UTC), datetime.fromtimestamp(now / 1000, UTC)],
    )
    assert "ingest_reading_pkey" in raw, raw
    for interval in (10_000, HOUR):
        query = HistoryQuery(device_id=device_id, keys=("k1",), start=now - HOUR, end=now, agg="AVG", interval=interval)
        shape = plan(*aggregate_statement(query))
        # TimescaleDB's continuous aggregate is a hypertable indexed on (device_id, key, bucket), not on a primary key;
        # its real-time part reads the raw chunks by theirs, and which part a plan keeps depends on the minute the
        # test runs (the aggregate's watermark): either way, an index.
        index = "pkey" if engine == "postgres" or aggregate_source(interval) == "ingest_reading" else "Index Scan"
        assert index in shape and "Seq Scan" not in shape, shape


async def test_retention_drops_old_raw_rows_and_keeps_recent_ones_and_rollups(make_device, runtime, engine):
    """Raw rows older than HUB_RAW_RETENTION_DAYS go; recent rows and the rollups of old ones stay. (TimescaleDB
    drops whole chunks, after refreshing the continuous aggregates over them.)"""
    from storage.models import Reading
    from storage.retention import RetentionConfig, retention_apply

    device = await sync_to_async(make_device)()
    now = now_ms()
    old = [R(now - 40 * 86_400_000 + i * 1000, "t", float(i)) for i in range(100)]
    recent = [R(now - 86_400_000 + i * 1000, "t", float(i)) for i in range(10)]
    await store(runtime.writer, device, old + recent)
    deleted = await sync_to_async(retention_apply)(RetentionConfig(raw_days=30))
    assert deleted["ingest_reading"] == (100 if engine == "postgres" else len({r.ts // 86_400_000 for r in old}))
    assert await sync_to_async(Reading.objects.filter(device_id=device.id).count)() == 10

    def rollup_count() -> int:
        refresh_aggregates()
        with connection.cursor() as cursor:
            cursor.execute("SELECT sum(n) FROM ingest_rollup_1h WHERE device_id = %s", [device.id])
            return int(cursor.fetchone()[0])

    assert await sync_to_async(rollup_count)() == 110, "rollups keep their own retention"
    await sync_to_async(retention_apply)(RetentionConfig(raw_days=30, rollup_1h_days=30))
    assert await sync_to_async(rollup_count)() == 10


async def test_aggregates_beyond_a_double_answer_null_or_finite_numbers(make_device, runtime):
    """Sums or averages a double cannot hold (a raw bucket of ±1e300: an average's running variance overflows;
    1e308s stored before the parser's limit, in two hours: their day's sum from the hour rollups) are asked
    again exactly: the average is 0, the sum null (never Infinity, never a 500); min, max and count stay exact."""
    from history.selectors import readings_aggregate

    device = await sync_to_async(make_device)()
    day = 86_400_000
    t0 = (now_ms() // day - 2) * day
    await store(
        runtime.writer,
        device,
        [R(t0, "big", 1e308), R(t0 + HOUR, "big", 1e308), R(t0, "w", 1e300), R(t0 + 1, "w", -1e300)],
    )
    await sync_to_async(refresh_aggregates)()
    query = HistoryQuery(device_id=device.id, keys=("big", "w"), start=t0, end=t0 + day, agg="SUM", interval=day)
    assert aggregate_source(day) == "ingest_rollup_1h"
    sums = await sync_to_async(readings_aggregate)(query, band=True)
    assert sums == {"big": [{"ts": t0, "value": None, "min": 1e308, "max": 1e308}],
                    "w": [{"ts": t0, "value": 0.0, "min": -1e300, "max": 1e300}]}  # fmt: skip
    raw = HistoryQuery(device_id=device.id, keys=("w",), start=t0, end=t0 + MINUTE, agg="AVG", interval=1500)
    assert aggregate_source(1500) == "ingest_reading"
    assert await sync_to_async(readings_aggregate)(raw) == {"w": [{"ts": t0, "value": 0.0}]}
