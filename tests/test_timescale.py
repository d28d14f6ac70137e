"""TimescaleDB as a deployment meets it: a server with the package installed but not preloaded, the explicit
HUB_TIMESCALE modes, converting a plain-PostgreSQL hub in place, and compression that changes no answer."""

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator

import psycopg
import pytest
from asgiref.sync import sync_to_async
from django.db import connection

from core.epoch import from_epoch_ms, now_ms
from devices.services import DeviceIdentity
from history.export import csv_stream
from history.selectors import (
    HistoryQuery,
    aggregate_statement,
    readings_aggregate,
    readings_latest,
    readings_raw,
    readings_since,
)
from ingest.parsing import Reading as R
from ingest.writer import Writer
from storage.engine import Reads
from storage.timescale import EXTENSION_CREATED, READING_HYPERTABLE, timescale_configure
from tests.conftest import ROOT, database_url_for_tests
from tests.engines import refresh_aggregates
from tests.services import TIMESCALE_URL, need

pytestmark = pytest.mark.usefixtures("postgres")

HOUR = 3_600_000
DAY = 24 * HOUR


@pytest.fixture
def scratch_databases() -> Iterator:
    """make(server_url) -> the URL of a new empty database on that server; all dropped afterwards."""
    made: list[tuple[str, str]] = []

    def make(server: str) -> str:
        name = f"hub_ts_{os.getpid()}_{len(made)}"
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{name}"')
        made.append((server, name))
        return server.rsplit("/", 1)[0] + f"/{name}"

    yield make
    for server, name in made:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def manage(*args: str, database: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("HUB_", "DJANGO_"))}
    environment.update(HUB_DATABASE_URL=database, HUB_SECRET_KEY="t" * 50, HUB_VAR_DIR=os.environ["HUB_VAR_DIR"], **env)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300
    )


def storage_of(database: str) -> tuple[bool, bool, str]:
    """(extension created, readings in a hypertable, relkind of the minute rollups: r table, v view)."""
    with psycopg.connect(database) as conn:
        extension = conn.execute(EXTENSION_CREATED).fetchone() is not None
        hypertable = extension and conn.execute(READING_HYPERTABLE).fetchone() is not None
        relkind = conn.execute("SELECT relkind FROM pg_class WHERE relname = 'ingest_rollup_1m'").fetchone()[0]
    return extension, hypertable, relkind


def plain_server_lists_timescaledb() -> bool:
    with psycopg.connect(database_url_for_tests()) as conn:
        return conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone() is not None


def test_a_server_with_timescaledb_installed_but_not_preloaded_migrates_as_plain_postgresql(scratch_databases):
    """auto: plain PostgreSQL and one warning naming why; on: refused with that reason; off: untouched."""
    if not plain_server_lists_timescaledb():
        pytest.skip("the plain PostgreSQL server does not list timescaledb (make timescaledb installs it)")
    server = database_url_for_tests().rsplit("/", 1)[0] + "/postgres"
    auto = scratch_databases(server)
    done = manage("migrate", "-v0", database=auto)
    assert done.returncode == 0, done.stderr
    assert "timescaledb is installed but not in shared_preload_libraries" in done.stderr
    assert storage_of(auto) == (False, False, "r")
    refused = manage("migrate", "-v0", database=scratch_databases(server), HUB_TIMESCALE="on")
    assert refused.returncode != 0
    assert "HUB_TIMESCALE=on, but timescaledb is installed but not in shared_preload_libraries" in refused.stderr
    off = scratch_databases(server)
    assert manage("migrate", "-v0", database=off, HUB_TIMESCALE="off").returncode == 0
    assert storage_of(off) == (False, False, "r")


def write_readings(database: str, device_key: str, rows: list[tuple[str, int, float]]) -> None:
    with psycopg.connect(database) as conn:
        device_id = conn.execute(
            "INSERT INTO devices_device (key, name, created_at, token_hash, broker_hash)"
            " VALUES (%s, '', now(), md5(%s), '') RETURNING id",
            [device_key, device_key],
        ).fetchone()[0]
        with conn.cursor().copy("COPY ingest_reading (device_id, key, ts, value) FROM STDIN") as copy:
            for key, ts, value in rows:
                copy.write_row((device_id, key, from_epoch_ms(ts), value))


def rollup_sums(database: str) -> list[tuple]:
    with psycopg.connect(database) as conn:
        return conn.execute("SELECT key, bucket, n, sum FROM ingest_rollup_1h ORDER BY key, bucket").fetchall()


def test_a_plain_postgresql_hub_converts_in_place_and_refuses_to_start_with_on_until_it_has(
    scratch_databases, hub_process
):
    need("TimescaleDB", TIMESCALE_URL)
    database = scratch_databases(TIMESCALE_URL)
    assert manage("migrate", "-v0", database=database, HUB_TIMESCALE="off").returncode == 0
    assert storage_of(database) == (False, False, "r")

    refused = hub_process(HUB_DATABASE_URL=database, HUB_TIMESCALE="on").start()
    assert refused.process.wait(timeout=60) != 0, "HUB_TIMESCALE=on refuses a database without TimescaleDB"
    assert "HUB_TIMESCALE=on, but" in refused.log.read_text() and "timescale_convert" in refused.log.read_text()

    t0 = (now_ms() // HOUR - 30) * HOUR
    rows = [(key, t0 + i * 60_000, float(i % 17)) for i in range(30 * 60) for key in ("a", "b")]
    write_readings(database, "conv-1", rows)
    expected = {
        (key, hour): (sum(1 for k, ts, _ in rows if k == key and ts // HOUR == hour),)
        for key in ("a", "b")
        for hour in {ts // HOUR for _, ts, _ in rows}
    }
    done = manage("timescale_convert", database=database)
    assert done.returncode == 0, done.stderr
    assert storage_of(database) == (True, True, "v")
    sums = rollup_sums(database)
    assert {(key, round(bucket.timestamp() * 1000) // HOUR): (n,) for key, bucket, n, _ in sums} == expected
    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT count(*) FROM ingest_reading").fetchone()[0] == len(rows)
        jobs = {row[0] for row in conn.execute("SELECT proc_name FROM timescaledb_information.jobs")}
    assert {"policy_compression", "policy_refresh_continuous_aggregate"} <= jobs
    again = manage("timescale_convert", database=database)
    assert again.returncode == 0 and "already a hypertable" in again.stdout


async def store(writer: Writer, device: DeviceIdentity, readings: list[R]) -> None:
    for future in [await writer.submit(device, readings[i : i + 1000]) for i in range(0, len(readings), 1000)]:
        await asyncio.wait_for(future, 30)


async def answers(reads: Reads, device_id: int, t0: int) -> dict:
    """What the history API, the CSV export, the stream's catch-up and the latest values say of the data."""
    queries = {
        "raw": HistoryQuery(device_id=device_id, keys=("a", "b"), start=t0, end=t0 + DAY, limit=10_000),
        "raw-desc": HistoryQuery(
            device_id=device_id, keys=("a",), start=t0, end=t0 + DAY, limit=500, newest_first=True
        ),
        "10s": HistoryQuery(device_id=device_id, keys=("a", "b"), start=t0, end=t0 + DAY, agg="MAX", interval=10_000),
        "1m": HistoryQuery(device_id=device_id, keys=("a", "b"), start=t0, end=t0 + DAY, agg="AVG", interval=60_000),
        "1h": HistoryQuery(device_id=device_id, keys=("a", "b"), start=t0, end=t0 + DAY, agg="SUM", interval=HOUR),
    }
    result: dict = {}
    for name, query in queries.items():
        if query.agg == "NONE":
            result[name] = await sync_to_async(readings_raw)(query)
        else:
            result[name] = await sync_to_async(readings_aggregate)(query, band=True)
        result[f"{name}.csv"] = b"".join(
            [
                chunk
                async for chunk in csv_stream(query, reads=reads, band=query.agg == "AVG", budget=100_000, timeout=30)
            ]
        )
    result["since"] = await sync_to_async(readings_since)(device_id=device_id, since=t0 + 3 * HOUR, limit=5_000)
    result["latest"] = await sync_to_async(readings_latest)(device_id)
    return result


def compress_everything() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(compress_chunk(c, if_not_compressed => true)) FROM show_chunks('ingest_reading') c"
        )
        return cursor.fetchone()[0]


def stored_count(device_id: int) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM ingest_reading WHERE device_id = %s", [device_id])
        return cursor.fetchone()[0]


@pytest.mark.parametrize("engine", ["timescale"], indirect=True)
async def test_compressed_chunks_give_the_same_answers_and_take_late_readings_and_resends(engine, make_device, runtime):
    """History (raw, aggregates, CSV), the stream catch-up and latest values answer the same before and after
    compression; a late reading into a compressed chunk is committed (and acked), a resend of a compressed
    one is stored once, and both show in the answers."""
    made = await sync_to_async(make_device)()
    device = DeviceIdentity(made.id, made.key)
    t0 = (now_ms() // DAY - 3) * DAY  # three days ago: chunks a compression policy takes
    readings = [R(t0 + i * 7_000 + (i % 5) * 13, key, float((i * 37) % 101) / 7) for i in range(6_000) for key in "ab"]
    await store(runtime.writer, device, readings)
    await sync_to_async(refresh_aggregates)()
    before = await answers(runtime.history.stream, device.id, t0)
    assert sum(len(points) for points in before["raw"].values()) == len(readings)
    assert await sync_to_async(compress_everything)() >= 1
    after = await answers(runtime.history.stream, device.id, t0)
    assert after == before

    late = R(t0 + 3_500, "a", 99.5)  # between two stored readings, in a compressed chunk
    await store(runtime.writer, device, [late, *readings[:50]])  # with 50 resends of compressed readings
    assert await sync_to_async(stored_count)(device.id) == len(readings) + 1
    await sync_to_async(refresh_aggregates)()
    final = await answers(runtime.history.stream, device.id, t0)
    assert {"ts": late.ts, "value": late.value} in final["raw"]["a"]
    assert max(p["max"] for p in final["1m"]["a"]) == 99.5


def days_stored_and_compressed(first_day: int, days: int) -> list[int]:
    """One reading a minute over `days` days from `first_day` (ms), its chunks compressed oldest first as the
    policy does; the span in days of every chunk of the readings table."""
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO ingest_reading (device_id, key, ts, value) SELECT 1, 'a', t, 1.5"
            " FROM generate_series(%s::timestamptz, %s::timestamptz, interval '1 minute') t",
            [from_epoch_ms(first_day), from_epoch_ms(first_day + days * DAY - 60_000)],
        )
        cursor.execute(
            "SELECT count(compress_chunk(format('%I.%I', chunk_schema, chunk_name)::regclass)) FROM"
            " (SELECT * FROM timescaledb_information.chunks WHERE hypertable_name = 'ingest_reading'"
            " AND NOT is_compressed ORDER BY range_start) c"
        )
        cursor.execute(
            "SELECT extract(day FROM range_end - range_start)::int FROM timescaledb_information.chunks"
            " WHERE hypertable_name = 'ingest_reading' ORDER BY range_start"
        )
        return [row[0] for row in cursor.fetchall()]


@pytest.mark.parametrize("engine", ["timescale"], indirect=True)
def test_compressed_days_merge_into_weeks_unless_raw_readings_have_a_retention(engine, transactional_db, settings):
    """Days compressed one after the other become one compressed chunk of up to a week (each compressed chunk
    has a fixed cost on disk); with a raw retention they stay days, as retention drops whole chunks."""
    week = (now_ms() // DAY - 30) // 7 * 7 * DAY  # chunks of HUB_TIMESCALE_CHUNK_INTERVAL (1 day) from here
    assert days_stored_and_compressed(week, 3) == [3]
    assert days_stored_and_compressed(week + 3 * DAY, 5) == [7, 1], "a week at most"
    try:
        settings.HUB_RAW_RETENTION_DAYS = 30
        with connection.cursor() as cursor:
            timescale_configure(cursor)  # as the next migrate does
        assert days_stored_and_compressed(week + 8 * DAY, 2) == [7, 1, 1, 1]
    finally:
        settings.HUB_RAW_RETENTION_DAYS = 0
        with connection.cursor() as cursor:
            timescale_configure(cursor)


@pytest.mark.parametrize("engine", ["timescale"], indirect=True)
def test_a_days_minutes_of_one_device_are_read_through_the_device_and_key_index(engine, transactional_db):
    """Each aggregate has an index on (device_id, key, bucket) after migrate, and a day of one device's minutes is
    read through it, not by scanning the whole fleet's buckets of that day."""
    end = now_ms() // DAY * DAY - DAY
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tablename, indexdef FROM pg_indexes WHERE indexname = ANY(%s)",
            [[f"{name}_device_key_bucket" for name in ("ingest_rollup_1m", "ingest_rollup_1h")]],
        )
        indexes = cursor.fetchall()
        assert len(indexes) == 2
        assert all(definition.endswith("(device_id, key, bucket)") for _, definition in indexes)
        cursor.execute(
            "INSERT INTO ingest_reading (device_id, key, ts, value) SELECT d, k, %s - m * interval '1 minute', m"
            " FROM generate_series(1, 20) d, unnest(array['temperature', 'humidity', 'voltage']) k,"
            " generate_series(1, 1440) m",
            [from_epoch_ms(end)],
        )
    refresh_aggregates()
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE ingest_rollup_1m")  # TimescaleDB forwards it to the materialization's chunks
        query = HistoryQuery(device_id=7, keys=("temperature",), start=end - DAY, end=end, interval=60_000)
        sql, params = aggregate_statement(query)
        cursor.execute(f"EXPLAIN {sql}", params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "ingest_rollup_1m_device_key_bucket" in plan, plan
