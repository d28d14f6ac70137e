"""Storage per engine: bytes per reading and history query medians on plain PostgreSQL, TimescaleDB
uncompressed and TimescaleDB compressed, from one run on the same simulated fleet.

    .venv/bin/python bench/storage.py [--devices 50] [--days 30] [--interval 60] [--runs 9]

1. The data: D devices reporting temperature, humidity and voltage every ~`--interval` s, over `--days`
   days ending now: a daily wave, a slow random walk and noise per key, at the resolution sensors send
   (0.1 °C, 0.1 %RH, 1 mV), a sample timer that drifts (±0.1 %), and now and then a device offline for
   hours. `--noisy` is the worst case for compression: values finer than their noise (0.01 °C under
   σ 0.15), timing wandering ±30 %. (Text values are stored only as latest values, not per reading.)
2. Per engine, a fresh database (`manage.py migrate` with HUB_TIMESCALE=auto: plain on the 5432 cluster,
   a hypertable with continuous aggregates on TimescaleDB's 5433), the devices registered, then every
   reading through the hub's own storage backend (`storage.postgres.PostgresBackend.write`: COPY, INSERT,
   rollups, latest values) in time order, in batches of the writer's 20,000 rows, two in flight: the writer's rate.
3. TimescaleDB: the continuous aggregates refreshed over the whole span (what their policy does), sizes
   measured; then every chunk older than HUB_COMPRESS_AFTER (1 day) compressed (in creation order), as the
   compression policy does (merged into weeks, storage/timescale.py), and measured again, with where the
   bytes of compressed chunks go: each column's stored values, row and TOAST overhead, indexes, maps.
4. History queries, the median of `--runs` (a different device each run, two warm-ups), with the hub's
   own SQL (`history.selectors`): one key over 1 day at 1-minute buckets (AVG with the min/max band), over
   30 days at 1-hour buckets, and a raw page of 10,000 points from the start of the span.

Targets: ≤ 10 bytes per reading in compressed chunks; every query within its history target (1 day < 50 ms,
30 days < 150 ms: bench/history.py's, there over HTTP) on compressed data; TimescaleDB ingest ≥ 80 % of the
same run's plain-PostgreSQL rate. Loopback only; the scratch databases are dropped.
"""

import argparse
import asyncio
import math
import os
import random
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
from harness import console, database_create, database_drop, hub_env, migrate, progress, table
from psycopg import sql

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hub.settings")
os.environ.setdefault("HUB_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")  # the dialect: PostgreSQL
import django  # noqa: E402

django.setup()

from core.epoch import now_ms  # noqa: E402
from history.selectors import HistoryQuery, aggregate_statement, raw_statement  # noqa: E402
from storage.engine import Batch, LatestRow  # noqa: E402
from storage.engines import POSTGRES  # noqa: E402

PLAIN_ADMIN = os.environ.get("HUB_BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
TIMESCALE_ADMIN = os.environ.get("HUB_BENCH_TIMESCALE_URL", "postgresql://root@127.0.0.1:5433/postgres")
KEYS = ("temperature", "humidity", "voltage")
DAY_MS = 86_400_000
BATCH_ROWS = 20_000
TARGETS_MS = {"1 day @ 1 min": 50.0, "30 days @ 1 h": 150.0}
TARGET_BYTES = 10.0
TARGET_INGEST_RATIO = 0.8


@dataclass
class Figures:
    engine: str
    rate: float = 0.0
    readings: int = 0
    bytes_total: int = 0
    compressed_bytes_per_reading: float | None = None
    queries: dict[str, float] | None = None

    @property
    def bytes_per_reading(self) -> float:
        return self.bytes_total / max(self.readings, 1)


@dataclass(frozen=True)
class Sensors:
    """How the simulated devices report: resolution (decimals) and noise per key, and timing jitter."""

    decimals: tuple[int, int, int]  # temperature, humidity, voltage
    noise: tuple[float, float, float]  # standard deviation per sample
    jitter: float  # each gap is the interval × (1 ± up to this)


# Sensors as sold: temperature and humidity at 0.1 resolution (SHT3x/DHT22 class), supply voltage in mV, a
# sample timer that drifts by up to ±0.1 % (tens of ms at a minute).
TYPICAL = Sensors(decimals=(1, 1, 3), noise=(0.05, 0.2, 0.002), jitter=0.001)
# The worst case for compression: finer resolution than the noise, and timing that wanders by ±30 %.
NOISY = Sensors(decimals=(2, 1, 3), noise=(0.15, 0.4, 0.01), jitter=0.3)


def fleet(devices: int, days: int, interval_s: float, sensors: Sensors, end: int) -> Iterator:
    """(device index, key, ts, value) of every numeric reading, in ts order across the fleet."""
    start = end - days * DAY_MS
    streams = [_device_readings(d, random.Random(d), start, end, interval_s, sensors) for d in range(devices)]
    yield from _merged(streams)


def _device_readings(d: int, rng: random.Random, start: int, end: int, interval_s: float, s: Sensors) -> Iterator:
    """A daily wave, a slow random walk (weather) and noise per key; now and then offline for hours."""
    ts = start + rng.randrange(int(interval_s * 1000))
    walk = 0.0
    phase = rng.random() * 2 * math.pi
    drift = 3.3 + rng.gauss(0, 0.05)
    while ts < end:
        day = 2 * math.pi * ts / DAY_MS + phase
        walk = max(-3.0, min(3.0, walk + rng.gauss(0, 0.02)))
        yield ts, d, "temperature", round(21 + 3 * math.sin(day) + walk + rng.gauss(0, s.noise[0]), s.decimals[0])
        yield ts, d, "humidity", round(45 + 10 * math.sin(day / 3) - 2 * walk + rng.gauss(0, s.noise[1]), s.decimals[1])
        drift -= abs(rng.gauss(0, 0.00002))  # a battery, slowly draining
        yield ts, d, "voltage", round(drift + rng.gauss(0, s.noise[2]), s.decimals[2])
        step = interval_s * 1000 * rng.uniform(1 - s.jitter, 1 + s.jitter)
        if rng.random() < 0.0005:  # offline for up to 6 hours now and then
            step += rng.uniform(0, 6 * 3_600_000)
        ts += int(step)


def _merged(streams: list[Iterator]) -> Iterator[tuple[int, str, int, float]]:
    import heapq

    for ts, d, key, value in heapq.merge(*streams):
        yield d, key, ts, value


def batches(device_ids: list[int], readings: Iterator) -> Iterator[Batch]:
    rows: list[tuple[int, str, int, float]] = []
    for d, key, ts, value in readings:
        rows.append((device_ids[d], key, ts, value))
        if len(rows) >= BATCH_ROWS:
            yield _batch(rows)
            rows = []
    if rows:
        yield _batch(rows)


def _batch(rows: list[tuple[int, str, int, float]]) -> Batch:
    newest: dict[tuple[int, str], tuple[int, float]] = {}
    for device_id, key, ts, value in rows:
        newest[(device_id, key)] = (ts, value)
    latest = [LatestRow(d, k, ts, v, None) for (d, k), (ts, v) in sorted(newest.items())]
    return Batch(rows=rows, latest=latest, device_ids=sorted({d for d, _ in newest}), seen_at=datetime.now(UTC))


async def load(url: str, device_ids: list[int], args: argparse.Namespace, end: int) -> tuple[int, float]:
    """Every reading through the hub's backend, two batches in flight; (readings, rows per second)."""
    backend = POSTGRES.writer_backend(url, pool_size=2)
    await backend.open()
    total, in_flight = 0, set()
    expected = int(len(device_ids) * len(KEYS) * args.days * DAY_MS / (args.interval * 1000))
    started = time.perf_counter()
    with progress() as bar:
        task = bar.add_task("load", total=expected, status="readings")
        for batch in batches(
            device_ids, fleet(len(device_ids), args.days, args.interval, NOISY if args.noisy else TYPICAL, end)
        ):
            if len(in_flight) >= 2:
                done, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                for finished in done:
                    finished.result()
            in_flight.add(asyncio.create_task(backend.write(batch)))
            total += len(batch.rows)
            bar.update(task, completed=total)
        await asyncio.gather(*in_flight)
    elapsed = time.perf_counter() - started
    await backend.close()
    return total, total / elapsed


def register(url: str, devices: int) -> list[int]:
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO devices_device (key, name, created_at, token_hash, broker_hash)"
            " SELECT 'store-' || g, '', now(), md5('store' || g), '' FROM generate_series(0, %s - 1) g",
            [devices],
        )
        return [row[0] for row in conn.execute("SELECT id FROM devices_device ORDER BY key")]


def readings_bytes(url: str, hypertable: bool) -> tuple[int, int]:
    """(rows, bytes of the readings table with its indexes; for a hypertable, every chunk, compressed or not)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) ingest_reading")
        rows = conn.execute("SELECT count(*) FROM ingest_reading").fetchone()[0]
        size_sql = (
            "SELECT hypertable_size('ingest_reading')"
            if hypertable
            else ("SELECT pg_total_relation_size('ingest_reading')")
        )
        return rows, conn.execute(size_sql).fetchone()[0]


def refresh_aggregates(url: str) -> float:
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        for name in ("ingest_rollup_1m", "ingest_rollup_1h"):
            conn.execute("CALL refresh_continuous_aggregate(%s, NULL, NULL)", [name])
    return time.perf_counter() - started


def compress(url: str) -> tuple[int, float, float]:
    """Chunks older than a day compressed (as the policy would); (chunks, seconds, bytes per reading in them)."""
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        chunks = conn.execute(
            "SELECT count(compress_chunk(c, if_not_compressed => true))"
            " FROM show_chunks('ingest_reading', older_than => interval '1 day') c"
        ).fetchone()[0]
        elapsed = time.perf_counter() - started
        conn.execute("VACUUM (ANALYZE) ingest_reading")
        stats = conn.execute(
            "SELECT format('%I.%I', chunk_schema, chunk_name), after_compression_total_bytes"
            " FROM chunk_compression_stats('ingest_reading') WHERE compression_status = 'Compressed'"
        ).fetchall()
        rows = sum(conn.execute(f"SELECT count(*) FROM {chunk}").fetchone()[0] for chunk, _ in stats)  # noqa: S608
    return chunks, elapsed, sum(size for _, size in stats) / max(rows, 1)


# Each compressed chunk (a row per batch of up to 1,000 readings of one device and key) and its TOAST table.
COMPRESSED_CHUNKS = """
    SELECT format('%I.%I', z.schema_name, z.table_name), t.reltoastrelid::regclass::text
    FROM _timescaledb_catalog.chunk c JOIN _timescaledb_catalog.chunk z ON z.id = c.compressed_chunk_id
    JOIN _timescaledb_catalog.hypertable h ON h.id = c.hypertable_id
    JOIN pg_class t ON t.oid = format('%I.%I', z.schema_name, z.table_name)::regclass
    WHERE h.table_name = 'ingest_reading'
"""
RELATION_SIZES = """
    SELECT pg_relation_size(%(r)s::regclass), pg_relation_size(%(t)s::regclass),
           pg_indexes_size(%(r)s::regclass) + pg_indexes_size(%(t)s::regclass),
           pg_total_relation_size(%(r)s::regclass) - pg_relation_size(%(r)s::regclass)
           - pg_relation_size(%(t)s::regclass) - pg_indexes_size(%(r)s::regclass) - pg_indexes_size(%(t)s::regclass)
"""


def compressed_breakdown(url: str) -> list[tuple[str, float]]:
    """Where the bytes of the compressed chunks go, per reading: each column's values as stored
    (pg_column_size), then what the relations add around them: the compressed rows (tuple headers, TOAST
    pointers, free space), the TOAST rows (headers, free space), indexes, free-space and visibility maps."""
    parts: dict[str, int] = {}
    readings = 0
    with psycopg.connect(url, autocommit=True) as conn:
        for relation, toast in conn.execute(COMPRESSED_CHUNKS).fetchall():
            columns = [
                row[0]
                for row in conn.execute(
                    "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0"
                    " AND NOT attisdropped ORDER BY attnum",
                    [relation],
                )
            ]
            sizes = sql.SQL(", ").join(
                sql.SQL("coalesce(sum(pg_column_size({})), 0)").format(sql.Identifier(c)) for c in columns
            )
            count, *stored = conn.execute(
                sql.SQL("SELECT sum(_ts_meta_count), {} FROM {}").format(sizes, sql.SQL(relation))
            ).fetchone()
            readings += count
            for column, size in zip(columns, stored, strict=True):
                name = "metadata (_ts_meta_*)" if column.startswith("_ts_meta") else column
                parts[name] = parts.get(name, 0) + size
            external = conn.execute(
                sql.SQL("SELECT coalesce(sum(octet_length(chunk_data)), 0) FROM {}").format(sql.SQL(toast))
            ).fetchone()[0]
            heap, toast_heap, indexes, maps = conn.execute(RELATION_SIZES, {"r": relation, "t": toast}).fetchone()
            inline = sum(stored) - external
            for name, size in (
                ("compressed rows: headers, TOAST pointers, free space", heap - inline),
                ("TOAST rows: headers, free space", toast_heap - external),
                ("indexes (chunk, TOAST)", indexes),
                ("free-space and visibility maps", maps),
            ):
                parts[name] = parts.get(name, 0) + size
    return [(name, size / max(readings, 1)) for name, size in parts.items()]


def time_queries(url: str, device_ids: list[int], end: int, days: int, runs: int) -> dict[str, float]:
    span = days * DAY_MS
    shapes = {
        "1 day @ 1 min": {"start": end - DAY_MS, "agg": "AVG", "interval": 60_000},
        "30 days @ 1 h": {"start": end - span, "agg": "AVG", "interval": 3_600_000},
        "raw 10,000 points": {"start": end - span, "agg": "NONE", "interval": None, "limit": 10_000},
    }
    medians = {}
    # Parameters bound client-side, as the hub's Django connection does: server-side, psycopg prepares a
    # statement after 5 runs and PostgreSQL then plans it once for any device (a generic plan), which the hub
    # never does.
    with psycopg.connect(url, cursor_factory=psycopg.ClientCursor) as conn:
        for name, shape in shapes.items():
            times = []
            for run in range(runs + 2):
                query = HistoryQuery(
                    device_id=device_ids[run % len(device_ids)], keys=("temperature",), end=end, **shape
                )
                sql, params = raw_statement(query, "temperature") if query.agg == "NONE" else aggregate_statement(query)
                started = time.perf_counter()
                rows = conn.execute(sql, params).fetchall()
                if run >= 2:  # two warm-ups
                    times.append((time.perf_counter() - started) * 1000)
                assert rows, f"{name}: no rows"  # noqa: S101
            medians[name] = statistics.median(times)
    return medians


def engine_run(name: str, admin: str, args: argparse.Namespace, end: int) -> list[Figures]:
    db = f"hub_bench_storage_{name.replace(' ', '_')}_{os.getpid()}"
    url = database_create(db, admin)
    try:
        env = hub_env(url, redis_url="redis://127.0.0.1:6379/13", prefix=f"benchstorage{os.getpid()}")
        migrate({**env, "HUB_TIMESCALE_CHUNK_INTERVAL": args.chunk})
        with psycopg.connect(url) as conn:
            hypertable = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone() is not None
            if hypertable:  # the bench runs the policies' work itself, at known moments
                conn.execute(
                    "SELECT alter_job(job_id, scheduled => false) FROM timescaledb_information.jobs"
                    " WHERE hypertable_name IS NOT NULL"
                )
        device_ids = register(url, args.devices)
        readings, rate = asyncio.run(load(url, device_ids, args, end))
        console.print(f"{name}: {readings:,} readings at {rate:,.0f}/s")
        if hypertable:
            console.print(f"{name}: aggregates refreshed in {refresh_aggregates(url):.1f} s")
        rows, size = readings_bytes(url, hypertable)
        figures = [Figures(name, rate, rows, size, queries=time_queries(url, device_ids, end, args.days, args.runs))]
        if hypertable:
            chunks, seconds, per_reading = compress(url)
            console.print(f"{name}: {chunks} chunks compressed in {seconds:.1f} s")
            parts = compressed_breakdown(url)
            total = sum(size for _, size in parts)
            table(
                "where the bytes of compressed chunks go",
                ("part", "bytes/reading", "share"),
                [(part, f"{size:.3f}", f"{size / total:.0%}") for part, size in [*parts, ("total", total)]],
            )
            rows, size = readings_bytes(url, hypertable)
            queries = time_queries(url, device_ids, end, args.days, args.runs)
            figures.append(Figures(f"{name} compressed", rate, rows, size, per_reading, queries))
        return figures
    finally:
        database_drop(db, admin)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--interval", type=float, default=60.0, help="mean seconds between a device's reports")
    parser.add_argument(
        "--noisy", action="store_true", help="values finer than their noise, timing ±30 %% (worst case)"
    )
    parser.add_argument("--chunk", default="1 day", help="HUB_TIMESCALE_CHUNK_INTERVAL of the TimescaleDB database")
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    for url in (PLAIN_ADMIN, TIMESCALE_ADMIN):
        host = url.split("@")[-1].split(":")[0].split("/")[0]
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise SystemExit(f"refusing non-loopback database {host!r}")
    end = now_ms() // 60_000 * 60_000
    results = engine_run("PostgreSQL", PLAIN_ADMIN, args, end) + engine_run("TimescaleDB", TIMESCALE_ADMIN, args, end)
    plain = results[0]
    rows = []
    for f in results:
        q = f.queries or {}
        compressed = "" if f.compressed_bytes_per_reading is None else f"{f.compressed_bytes_per_reading:.1f}"
        rows.append(
            (
                f.engine,
                f"{f.readings:,}",
                f"{f.bytes_total / 2**20:,.1f} MiB",
                f"{f.bytes_per_reading:.1f}",
                compressed,
                f"{f.rate:,.0f} ({f.rate / plain.rate:.2f})",
                *(
                    f"{q.get(name, float('nan')):.1f}"
                    for name in ("1 day @ 1 min", "30 days @ 1 h", "raw 10,000 points")
                ),
            )
        )
    table(
        f"storage: {args.devices} devices × {len(KEYS)} numeric keys, {args.days} days, ~{args.interval:g} s apart"
        + (" (--noisy)" if args.noisy else ""),
        (
            "engine",
            "readings",
            "readings table",
            "bytes/reading",
            "bytes/reading in compressed chunks",
            "writer rows/s (÷ plain)",
            "1 day @ 1 min ms",
            "30 days @ 1 h ms",
            "raw 10,000 ms",
        ),
        rows,
    )
    compressed = results[-1]
    checks = [
        ("bytes per reading in compressed chunks", compressed.compressed_bytes_per_reading or math.inf, TARGET_BYTES),
        *((f"{n}, compressed", compressed.queries[n], t) for n, t in TARGETS_MS.items()),
    ]
    target_rows = [
        (what, f"{value:.1f}", f"≤ {limit:g}", "yes" if value <= limit else "NO") for what, value, limit in checks
    ]
    ratio = results[1].rate / plain.rate
    target_rows.append(
        (
            "TimescaleDB ingest ÷ plain",
            f"{ratio:.2f}",
            f"≥ {TARGET_INGEST_RATIO}",
            "yes" if ratio >= TARGET_INGEST_RATIO else "NO",
        )
    )
    table("targets", ("figure", "value", "target", "met"), target_rows)


if __name__ == "__main__":
    main()
