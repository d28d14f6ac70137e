"""A live chart's window (history/answers.py window_series, /api/v1/devices/<KEY>/window): min/max buckets of
about a pixel for the older part, the newest readings raw, joined with no gap and nothing counted twice; equal
to a fresh query of what is stored, from raw rows or rollups, on PostgreSQL and TimescaleDB."""

import httpx
import orjson
import pytest
from asgiref.sync import sync_to_async

from core.epoch import now_ms
from history.answers import window_series
from history.selectors import aggregate_source, window_interval
from ingest.parsing import Reading as R
from tests.engines import refresh_aggregates
from tests.test_history import MINUTE, api, hour_floor, store  # noqa: F401 - `api` is a fixture

pytestmark = [pytest.mark.usefixtures("postgres"), pytest.mark.engines]


def extremes(readings: list[R], start: int, end: int, interval: int) -> list[list]:
    """[bucket, min, max] of the readings in [start, end), by epoch-aligned bucket: what the chart should draw."""
    buckets: dict[int, list[float]] = {}
    for r in readings:
        if start - start % interval <= r.ts < end:
            buckets.setdefault(r.ts - r.ts % interval, []).append(r.value)
    return [[b, min(vs), max(vs)] for b, vs in sorted(buckets.items())]


def test_the_interval_is_about_a_pixel_and_minutes_from_twenty_seconds():
    assert window_interval(0, 15 * MINUTE, 1000) == 1000
    assert window_interval(0, 10_000, 1000) == 10
    assert window_interval(0, 60 * MINUTE, 1000) == 5000
    assert window_interval(0, 6 * 60 * MINUTE, 1000) == MINUTE, "a 6-hour window reads the minute rollups"
    assert aggregate_source(MINUTE) == "ingest_rollup_1m"


async def test_a_fast_key_is_buckets_then_raw_and_a_slow_key_is_all_raw(make_device, runtime):
    """At 50 readings/s for 10 minutes: the newest 500 raw from a bucket boundary on, and before it each 1-second
    bucket's min and max; every stored reading falls in exactly one of the two. At one every 2 s: all raw."""
    device = await sync_to_async(make_device)()
    t0 = now_ms() - 11 * MINUTE
    fast = [R(t0 + i * 20, "fast", float((i * 7919) % 1000)) for i in range(30_000)]
    slow = [R(t0 + i * 2000, "slow", float(i)) for i in range(300)]
    await store(runtime.writer, device, fast + slow)
    start, end = t0 + 30_500, t0 + 10 * MINUTE + 1
    series, newest = await sync_to_async(window_series)(
        device_id=device.id, keys=["fast", "slow"], start=start, end=end, interval=1000, tail=500
    )
    f, s = orjson.loads(series["fast"]), orjson.loads(series["slow"])
    assert f["split"] % 1000 == 0 and start < f["split"] < end
    assert f["raw"] == [[r.ts, r.value] for r in fast if f["split"] <= r.ts < end], "raw from the split on"
    assert 450 <= len(f["raw"]) <= 500
    assert f["buckets"] == extremes(fast, start, f["split"], 1000), "min/max of every second before the split"
    assert f["buckets"][-1][0] + 1000 == f["split"], "no gap at the join"
    assert s["buckets"] == [] and s["split"] == start
    assert s["raw"] == [[r.ts, r.value] for r in slow if start <= r.ts < end]
    assert newest == max(r.ts for r in fast + slow if r.ts < end)


async def test_a_long_window_reads_the_minute_rollups(make_device, runtime):
    """A 6-hour window at a reading a second: minute buckets from the rollups, the same extremes as the rows."""
    device = await sync_to_async(make_device)()
    t0 = hour_floor(now_ms()) - 7 * 60 * MINUTE
    readings = [R(t0 + i * 1000, "t", float((i * 31) % 97)) for i in range(6 * 3600)]
    await store(runtime.writer, device, readings)
    await sync_to_async(refresh_aggregates)()
    start, end = t0, t0 + 6 * 60 * MINUTE
    interval = window_interval(start, end, 1000)
    series, _newest = await sync_to_async(window_series)(
        device_id=device.id, keys=["t"], start=start, end=end, interval=interval, tail=2000
    )
    window = orjson.loads(series["t"])
    assert interval == MINUTE and 2000 - 60 <= len(window["raw"]) <= 2000, "the newest 2,000 from a minute's start"
    assert window["buckets"] == extremes(readings, start, window["split"], MINUTE)


async def test_the_window_api_answers_operators_and_names_bad_parameters(api, live_hub, make_device):  # noqa: F811
    device = await sync_to_async(make_device)()
    ts = now_ms()
    await store(live_hub.runtime.writer, device, [R(ts - 1000, "t", 1.0), R(ts, "t", 2.0)])
    url = f"/api/v1/devices/{device.key}/window"
    body = (await api.get(url, params={"start": ts + 1 - MINUTE, "end": ts + 1, "px": 600})).json()
    assert body["series"] == {"t": {"buckets": [], "raw": [[ts - 1000, 1.0], [ts, 2.0]], "split": ts + 1 - MINUTE}}
    assert body["newest"] == ts and body["interval"] == 100
    for params, parameter in (
        ({"start": 5, "end": 4}, "start"),
        ({"start": 1, "end": 2, "px": 1}, "px"),
        ({"keys": "nope", "start": 1, "end": 2}, "keys"),
    ):
        response = await api.get(url, params=params)
        assert response.status_code == 400 and response.json()["error"]["parameter"] == parameter, params
    async with httpx.AsyncClient(base_url=str(api.base_url)) as anonymous:
        assert (await anonymous.get(url, params={"start": 1, "end": 2})).status_code == 401
