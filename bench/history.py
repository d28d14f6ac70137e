"""History queries on 10 million readings: 100 devices × 4 keys × 25,000 points over 30 days (PostgreSQL).

    .venv/bin/python bench/history.py [--scale 1.0] [--runs 9] [--explain] [--keep | --reuse]

1. A fresh database `hub_bench_history` (CREATE DATABASE, then `manage.py migrate` under HUB_DATABASE_URL).
2. Load: each device's 100,000 readings are one batch of the hub's own storage backend
   (`storage.postgres.PostgresBackend.write`, two batches in flight): COPY into the writer's staging table,
   then the writer's `INSERT … ON CONFLICT DO NOTHING RETURNING` whose returned rows are upserted into the
   minute and hour rollups in the same statement, then latest values and last_seen, in one transaction.
   So the rollups are exactly what a running hub would hold for these readings.
3. VACUUM ANALYZE (what autovacuum does after a bulk insert; it also sets the visibility map).
4. A `manage.py serve` process on 127.0.0.1 and an API token; then, per query shape, the median of `--runs`
   timed requests to the real HTTP endpoint (a different device each run; two warm-up requests first),
   next to the same selector called in-process (no HTTP, no JSON), to separate SQL from serving:
   one key of one device over 1 day at 1-minute buckets (AVG with the page's min/max band),
   over 30 days at 1-hour buckets, a raw page of 10,000 points, and a 1,000,000-row CSV export streamed
   from `/api/v1/devices/<KEY>/telemetry.csv` (10 devices × 4 keys × 25,000 rows, one request per device).

`--scale 0.1` loads 10 devices instead of 100 (each device keeps its 100,000 readings, so per-query work is
unchanged; the CSV export then covers what exists). Targets: 1 day < 50 ms, 30 days < 150 ms,
CSV ≥ 200,000 rows/s. Every connection goes to 127.0.0.1 (a non-loopback HUB_BENCH_ADMIN_URL is refused).
"""

import argparse
import asyncio
import dataclasses
import ipaddress
import math
import os
import random
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx
import psycopg
from harness import (
    ADMIN_URL,
    console,
    database_create,
    database_drop,
    database_url,
    hub_env,
    hub_start,
    migrate,
    progress,
    table,
)

from core.epoch import now_ms
from storage.engine import Batch, LatestRow, Row
from storage.engines import POSTGRES
from storage.postgres import PostgresBackend
from testkit.process import HubProcess

DB = "hub_bench_history"
KEYS = ("humidity", "pressure", "temperature", "voltage")
DAY_MS = 86_400_000
SPAN_MS = 30 * DAY_MS
TARGETS = {"1 day @ 1 min": 50.0, "30 days @ 1 h": 150.0}
CSV_TARGET = 200_000


def loopback(url: str) -> str:
    """Refuse any address outside 127.0.0.0/8 (HUB_BENCH_ADMIN_URL may point anywhere): load stays local."""
    host = urlsplit(url).hostname or ""
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        raise SystemExit(f"refusing non-loopback address {host!r}")
    return url


URL = database_url(DB, loopback(ADMIN_URL))


def create_devices(count: int) -> list[tuple[int, str]]:
    with psycopg.connect(URL) as conn:
        conn.execute(
            """INSERT INTO devices_device (key, name, created_at, token_hash, broker_hash)
               SELECT 'hist-' || lpad(g::text, 3, '0'), 'History bench ' || g, now(), md5('hist' || g), ''
               FROM generate_series(0, %s - 1) g""",
            [count],
        )
    return bench_devices()


def bench_devices() -> list[tuple[int, str]]:
    with psycopg.connect(URL) as conn:
        return conn.execute("SELECT id, key FROM devices_device WHERE key LIKE 'hist-%' ORDER BY key").fetchall()


def device_batch(device_id: int, index: int, points: int, end: int) -> Batch:
    """One device's readings: every key every SPAN/points ms (device-specific phase), a daily wave plus noise."""
    rng = random.Random(index)
    step = SPAN_MS // points
    first = end - SPAN_MS + (index * 7919) % step
    rows: list[Row] = []
    latest: list[LatestRow] = []
    for k, key in enumerate(KEYS):
        base, swing = 10.0 * (k + 1), 2.0 + k
        for i in range(points):
            ts = first + i * step
            value = round(base + swing * math.sin(ts * 2 * math.pi / DAY_MS) + rng.gauss(0, 0.5), 3)
            rows.append(Row(device_id, key, ts, value))
        latest.append(LatestRow(device_id, key, rows[-1].ts, rows[-1].value, None))
    return Batch(rows=rows, latest=latest, device_ids=[device_id], seen_at=datetime.now(UTC))


async def load(devices: list[tuple[int, str]], points: int, end: int) -> float:
    """Every device through the hub's PostgreSQL backend, two batches in flight; returns rows per second."""
    backend = POSTGRES.writer_backend(URL, pool_size=2)
    await backend.open()
    total = len(devices) * len(KEYS) * points
    in_flight: set[asyncio.Task] = set()
    started = time.perf_counter()
    with progress() as bar:
        task = bar.add_task("load", total=total, status="readings")
        for index, (device_id, _key) in enumerate(devices):
            batch = device_batch(device_id, index, points, end)
            if len(in_flight) >= 2:
                done, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                for written in done:
                    bar.advance(task, written.result())
            in_flight.add(asyncio.create_task(_write(backend, batch)))
        for written in asyncio.as_completed(in_flight):
            bar.advance(task, await written)
    elapsed = time.perf_counter() - started
    await backend.close()
    return total / elapsed


async def _write(backend: PostgresBackend, batch: Batch) -> int:
    await backend.write(batch)
    return len(batch.rows)


def vacuum_analyze() -> float:
    started = time.perf_counter()
    with psycopg.connect(URL, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")
    return time.perf_counter() - started


def count_rows() -> dict[str, int]:
    with psycopg.connect(URL) as conn:
        return {
            table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608 - fixed names
            for table in ("ingest_reading", "ingest_rollup_1m", "ingest_rollup_1h")
        }


def data_end() -> int:
    with psycopg.connect(URL) as conn:
        ts = conn.execute("SELECT max(ts) FROM ingest_reading").fetchone()[0]
    return int(ts.timestamp() * 1000) + 1


def api_token() -> str:
    """An operator `bench` and an API token for it (in this process: Django is set up on the bench database)."""
    from django.contrib.auth import get_user_model

    from api.credentials import api_token_create

    user, _ = get_user_model().objects.get_or_create(username="bench")
    return api_token_create(user=user, name="bench/history.py")


def shapes(end: int) -> dict[str, dict[str, int | str]]:
    return {
        "1 day @ 1 min": {"start": end - DAY_MS, "end": end, "agg": "AVG", "interval": 60_000, "band": 1},
        "30 days @ 1 h": {"start": end - SPAN_MS, "end": end, "agg": "AVG", "interval": 3_600_000, "band": 1},
        "raw 10,000 points": {"start": end - SPAN_MS, "end": end, "agg": "NONE", "limit": 10_000},
    }


def median_ms(call: Callable[[int], None], runs: int, devices: int) -> tuple[float, float, float]:
    """Median, min and max in ms of `runs` calls (a different device each run) after two warm-up calls."""
    call(0)
    call(1 % devices)
    times = []
    for run in range(runs):
        started = time.perf_counter()
        call(run % devices)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), min(times), max(times)


def time_http(client: httpx.Client, devices: list[tuple[int, str]], params: dict, runs: int) -> tuple:
    key = "temperature"

    def call(i: int) -> None:
        response = client.get(f"/api/v1/devices/{devices[i][1]}/telemetry", params={**params, "keys": key})
        response.raise_for_status()
        points = response.json()["data"][key]
        assert points, "no points: the data or the range is wrong"  # noqa: S101

    return median_ms(call, runs, len(devices))


def time_selector(devices: list[tuple[int, str]], params: dict, runs: int) -> tuple:
    """The same query through the selector in this process: SQL plus row decoding, no HTTP or JSON."""
    from history.selectors import HistoryQuery, readings_aggregate, readings_raw

    def call(i: int) -> None:
        query = HistoryQuery(
            device_id=devices[i][0],
            keys=("temperature",),
            start=params["start"],
            end=params["end"],
            agg=params["agg"],
            interval=params.get("interval"),
            limit=params.get("limit", 100),
        )
        readings_raw(query) if query.agg == "NONE" else readings_aggregate(query, band=True)

    return median_ms(call, runs, len(devices))


def explain(devices: list[tuple[int, str]], params: dict) -> str:
    from django.db import connection

    from history.selectors import HistoryQuery, aggregate_statement, raw_statement

    query = HistoryQuery(
        device_id=devices[0][0],
        keys=("temperature",),
        start=params["start"],
        end=params["end"],
        agg=params["agg"],
        interval=params.get("interval") or 1,
    )
    if query.agg == "NONE":
        sql, args = raw_statement(dataclasses.replace(query, limit=10_000), "temperature")
    else:
        sql, args = aggregate_statement(query)
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, args)
        return "\n".join(row[0] for row in cursor.fetchall())


def time_csv(client: httpx.Client, devices: list[tuple[int, str]], end: int, runs: int) -> tuple[int, float]:
    """Rows per second of raw CSV exports through the real endpoint: 10 devices × every key, back to back."""
    chosen = devices[:10]
    params = {"start": end - SPAN_MS, "end": end, "keys": ",".join(KEYS)}
    rates, rows = [], 0
    for _ in range(runs):
        rows, started = 0, time.perf_counter()
        for _id, key in chosen:
            with client.stream("GET", f"/api/v1/devices/{key}/telemetry.csv", params=params) as response:
                response.raise_for_status()
                rows += sum(chunk.count(b"\n") for chunk in response.iter_raw()) - 1  # minus the header
        rates.append(rows / (time.perf_counter() - started))
    return rows, statistics.median(rates)


def measure(client: httpx.Client, devices: list[tuple[int, str]], end: int, args: argparse.Namespace) -> list:
    """Every query shape over HTTP and in-process, then the CSV export; returns rows of the final table."""
    figures = []
    for name, params in shapes(end).items():
        if args.explain:
            console.print(f"--- {name}\n{explain(devices, params)}", markup=False)
        http = time_http(client, devices, params, args.runs)
        selector = time_selector(devices, params, args.runs)
        console.print(
            f"{name}: HTTP median {http[0]:.1f} ms (min {http[1]:.1f}, max {http[2]:.1f}); "
            f"selector median {selector[0]:.1f} ms"
        )
        target = TARGETS.get(name)
        met = "" if target is None else ("yes" if http[0] < target else "NO")
        figures.append((f"{name}, HTTP median", f"{http[0]:.1f} ms", f"< {target:.0f} ms" if target else "", met))
        figures.append((f"{name}, selector median (no HTTP)", f"{selector[0]:.1f} ms", "", ""))
    rows, rate = time_csv(client, devices, end, max(1, args.runs // 3))
    console.print(f"CSV: {rows:,} rows, median {rate:,.0f} rows/s")
    met = "yes" if rate >= CSV_TARGET else "NO"
    figures.append((f"CSV export ({rows:,} rows, HTTP)", f"{rate:,.0f} rows/s", f"≥ {CSV_TARGET:,} rows/s", met))
    return figures


def prepare(env: dict[str, str], args: argparse.Namespace) -> tuple[list[tuple[int, str]], list]:
    """The loaded database (or the kept one with --reuse) and the load figure."""
    if args.reuse:
        return bench_devices(), []
    database_create(DB, ADMIN_URL)
    migrate(env)
    devices = create_devices(max(1, round(100 * args.scale)))
    end = now_ms() // 60_000 * 60_000
    rate = asyncio.run(load(devices, args.points, end))
    console.print(f"loaded {len(devices) * len(KEYS) * args.points:,} readings at {rate:,.0f} readings/s")
    console.print(f"VACUUM ANALYZE: {vacuum_analyze():.1f} s")
    return devices, [("load (hub writer backend: COPY, insert, rollups)", f"{rate:,.0f} rows/s", "", "")]


def run(args: argparse.Namespace) -> None:
    env = hub_env(URL, redis_url="redis://127.0.0.1:6379/13", prefix="benchhistory")
    os.environ.update({k: v for k, v in env.items() if k.startswith("HUB_")})  # the in-process selectors
    os.environ["DJANGO_SETTINGS_MODULE"] = "hub.settings"
    devices, figures = prepare(env, args)
    console.print("rows: " + ", ".join(f"{t} {n:,}" for t, n in count_rows().items()))
    import django

    django.setup()
    hub = HubProcess(env)
    try:
        headers = {"Authorization": f"Bearer {api_token()}"}
        hub_start(hub)
        with httpx.Client(base_url=f"http://127.0.0.1:{hub.port}", headers=headers, timeout=120) as client:
            figures += measure(client, devices, data_end(), args)
    finally:
        hub.stop()
        from django.db import connections

        connections.close_all()
        if not (args.keep or args.reuse):
            database_drop(DB, ADMIN_URL)
    table("history queries (medians)", ("figure", "value", "target", "met"), figures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the 100 devices to load")
    parser.add_argument("--points", type=int, default=25_000, help="readings per key per device (over 30 days)")
    parser.add_argument("--runs", type=int, default=9, help="timed runs per query (CSV: a third as many)")
    parser.add_argument("--explain", action="store_true", help="print EXPLAIN (ANALYZE, BUFFERS) of each query")
    keep = parser.add_mutually_exclusive_group()
    keep.add_argument("--keep", action="store_true", help=f"keep the {DB} database afterwards")
    keep.add_argument("--reuse", action="store_true", help=f"skip the load: query an existing {DB}")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
