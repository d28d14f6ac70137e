"""Ingest throughput: D devices stream frames of B readings over the WebSocket ingest into the hub
(`manage.py serve`, PostgreSQL + Redis) and count what is stored, beside a raw COPY of the same rows.

    .venv/bin/python bench/ingest.py                        # B=100 and B=1, 100 devices, 10 s each (make bench)
    .venv/bin/python bench/ingest.py --layer both           # the same with the pubsub and the core layer
    .venv/bin/python bench/ingest.py --processes 2          # 1 hub process, then 2 sharing PostgreSQL + Redis
    .venv/bin/python bench/ingest.py --batches 100 --devices 200 --window 4 --seconds 20
    .venv/bin/python bench/ingest.py --baseline 1666163 --rounds 3   # this tree vs a commit, alternating

With --baseline REV, the hub code of REV (`git archive`, nothing in this checkout changes) runs beside this
tree's, each on its own scratch database migrated by its own code, rounds alternating the two.

Every reading has its own ts, so nothing dedupes: at the end the readings stored must equal the readings
sent (`lost` must be 0). Each connection keeps --window unacked frames in flight; the ack latency is from
sending a frame to the cumulative `{"ack": N}` that covers it. A subscriber in this process joins every
device's group on the channel layer (what a dashboard's consumer does) and counts the readings fanned out.
Two ceilings are measured in every round: the storage's (psycopg COPYing the stored rows into an identical
scratch table, in transactions of the writer's largest batch: `÷ COPY`) and the stack's (the same devices
sending the same frames to bench/stack_ceiling.py, a bare ASGI app under the hub's uvicorn settings that parses
each frame and acks it with no storage: `÷ stack` is the hub's frames/s over the bare app's). Loopback only; a
scratch database is created and dropped.
"""

import argparse
import asyncio
import contextlib
import itertools
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg
import uvloop
from harness import (
    BenchDevice,
    baseline_tree,
    bench_database,
    console,
    cpu_seconds,
    database_backend_pids,
    devices_copy,
    hubs_running,
    machine_busy_seconds,
    p50_p99,
    progress,
    stack_running,
    table,
)
from layers import LAYERS, layer_for

from clients.device import DeviceClient, Handled
from core.epoch import now_ms
from testkit.process import HubProcess

TARGETS = {100: ("readings/s", 150_000), 1: ("frames/s", 8_000)}
WRITER_BATCH_ROWS = 20_000  # HUB_WRITER_BATCH_ROWS default: the ceiling's transaction size
READINGS_TABLES = "ingest_reading, ingest_latestvalue, ingest_rollup_1m, ingest_rollup_1h"


class BenchFailure(Exception):
    """The hub answered something a correct run never sees (an error frame, a closed socket)."""


@dataclass
class Traffic:
    """What the devices of one scenario sent and got acked."""

    connected: int = 0
    frames: int = 0
    acked_frames: int = 0
    latencies: list[float] = field(default_factory=list)
    first_send: float = 0.0
    last_ack: float = 0.0


def frame_of(ts: int, batch: int) -> str:
    """B readings with consecutive, unique ts; a single object when B=1 (the common device message)."""
    if batch == 1:
        return '{"ts":%d,"values":{"t":%d.5}}' % (ts, ts % 1000)  # noqa: UP031 - the hot loop of the client
    return "[" + ",".join(['{"ts":%d,"values":{"t":%d.5}}' % (t, t % 1000) for t in range(ts, ts + batch)]) + "]"  # noqa: UP031


async def device(
    hub: str, token: str, batch: int, window: int, ts0: int, go: asyncio.Event, stop: asyncio.Event, traffic: Traffic
) -> None:
    """One device: connects, waits for `go`, keeps `window` frames unacked until `stop`, waits for every ack."""

    def handled(frame: Handled) -> None:
        traffic.latencies.append(frame.latency)
        traffic.acked_frames += 1
        traffic.last_ack = frame.acked_at

    options = {"open_timeout": 60, "ping_interval": None, "max_queue": None, "compression": None}
    async with DeviceClient.connect(hub, token, on_handled=handled, **options) as client:
        traffic.connected += 1
        await go.wait()
        ts = ts0
        while True:
            await client.window(window)
            if stop.is_set():
                break
            await client.send(frame_of(ts, batch))
            ts += batch
            traffic.frames += 1
            if client.errors:
                raise BenchFailure(f"the hub answered {client.errors}")
        try:
            async with asyncio.timeout(60):
                await client.all_acked()
        except TimeoutError:
            raise BenchFailure(f"{client.sent - client.acked_upto} frames unacked 60 s after the end") from None
        if client.errors:
            raise BenchFailure(f"the hub answered {client.errors}")


class FanoutCounter:
    """Joins every device's group on the channel layer, as a dashboard consumer does, and counts readings."""

    def __init__(self, kind: str, redis_url: str, prefix: str) -> None:
        self.layer = layer_for(kind, redis_url, prefix)
        self.readings = 0
        self.last = 0.0
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, keys: list[str]) -> None:
        for key in keys:
            channel = await self.layer.new_channel()
            await self.layer.group_add(f"device.{key}", channel)  # live.publisher.device_group
            self._tasks.append(asyncio.create_task(self._receive(channel)))

    async def _receive(self, channel: str) -> None:
        while True:
            message = await self.layer.receive(channel)
            self.readings += len(message["readings"])
            self.last = time.perf_counter()

    async def settle(self, expected: int, timeout: float = 10.0) -> None:
        """Wait (bounded) for the fan-out of the last flushes."""
        deadline = time.monotonic() + timeout
        while self.readings < expected and time.monotonic() < deadline:  # noqa: ASYNC110 - bounded
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.layer.flush()


@dataclass
class Scenario:
    """One measured run and its figures."""

    batch: int
    devices: int
    processes: int
    layer: str
    window: int
    traffic: Traffic
    stored: int = 0
    fanned_out: int | None = None
    fanout_lag: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds of the hubs, DB backends, this client
    writer: list[float] = field(default_factory=list)  # flushes, rows flushed, seconds in flushes (all hubs)
    round: int = 0
    ceiling: float | None = None  # rows/s of the COPY ceiling measured in the same round
    stack: "Scenario | None" = None  # the bare stack's run of the same batch in the same round
    code: str = ""  # "" for this tree, else the --baseline revision the hubs ran

    @property
    def label(self) -> str:
        return f"B={self.batch} {self.processes}p {self.layer}" + (f" @{self.code}" if self.code else "")

    @property
    def seconds(self) -> float:
        return max(self.traffic.last_ack - self.traffic.first_send, 1e-9)

    @property
    def sent(self) -> int:
        return self.traffic.frames * self.batch

    @property
    def readings_rate(self) -> float:
        return self.stored / self.seconds

    @property
    def frames_rate(self) -> float:
        return self.traffic.acked_frames / self.seconds

    def cpu_share(self) -> str:
        """Cores busy during the run: hubs / their database backends / this bench process / the whole machine."""
        return " / ".join(f"{self.cpu[name] / self.seconds:.2f}" for name in ("hub", "db", "client", "machine"))

    def target(self) -> str:
        if self.batch not in TARGETS:
            return ""
        unit, goal = TARGETS[self.batch]
        value = self.readings_rate if unit == "readings/s" else self.frames_rate
        return f"{'met' if value >= goal else 'MISSED'} (≥ {goal:,} {unit})"


async def scenario_run(setup: "Setup", args: argparse.Namespace, batch: int, ts0: int) -> Scenario:
    hubs, devices, layer = setup.hubs, setup.devices, setup.layer
    traffic = Traffic()
    result = Scenario(batch, len(devices), len(hubs), layer, args.window, traffic, code=setup.code)
    fanout = None
    if not args.no_fanout:
        fanout = FanoutCounter(layer, args.redis_url, hubs[0].env["HUB_CHANNEL_PREFIX"])
        await fanout.start([d.key for d in devices])
    go, stop = asyncio.Event(), asyncio.Event()
    tasks = [
        asyncio.create_task(device(hubs[i % len(hubs)].ws, d.token, batch, args.window, ts0, go, stop, traffic))
        for i, d in enumerate(devices)
    ]
    await devices_connected(tasks, traffic, len(devices))
    pids = {
        "hub": [hub.process.pid for hub in hubs],
        "db": database_backend_pids(setup.url),
        "client": [os.getpid()],
    }
    cpu_before = {name: cpu_seconds(group) for name, group in pids.items()}
    cpu_before["machine"] = machine_busy_seconds()
    writer_before = writer_totals(hubs)
    traffic.first_send = time.perf_counter()
    go.set()
    with progress() as bar:
        task = bar.add_task(result.label, total=int(args.seconds), status="")
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < args.seconds:
            await asyncio.sleep(0.25)
            rate = traffic.acked_frames * batch / max(time.perf_counter() - traffic.first_send, 1e-9)
            bar.update(task, completed=int(elapsed), status=f"{rate:,.0f} readings/s acked")
            if failed := [t for t in tasks if t.done() and t.exception()]:
                stop.set()
                raise failed[0].exception()
        stop.set()
        await asyncio.gather(*tasks)
    result.cpu = {name: cpu_seconds(group) - cpu_before[name] for name, group in pids.items()}
    # A database session opened during the run (a hub's pool growing) spent all its CPU time in it.
    result.cpu["db"] += cpu_seconds([pid for pid in database_backend_pids(setup.url) if pid not in pids["db"]])
    result.cpu["machine"] = machine_busy_seconds() - cpu_before["machine"]
    result.writer = [after - before for after, before in zip(writer_totals(hubs), writer_before, strict=True)]
    result.stored = stored_count(setup.url)
    if fanout is not None:
        await fanout.settle(result.sent)
        result.fanned_out = fanout.readings
        result.fanout_lag = max(fanout.last - traffic.last_ack, 0.0)
        await fanout.stop()
    return result


async def devices_connected(tasks: list[asyncio.Task[None]], traffic: Traffic, count: int) -> None:
    """Every socket is open before the clock starts; a device that ended meanwhile fails the bench."""
    while traffic.connected < count:
        await asyncio.sleep(0.05)
        if failed := [t for t in tasks if t.done()]:
            raise failed[0].exception() or BenchFailure("a device ended before sending")


async def stack_run(stack: HubProcess, args: argparse.Namespace, batch: int, devices: int, ts0: int) -> Scenario:
    """The same devices and frames against the bare stack: what the server and protocol alone sustain."""
    traffic = Traffic()
    result = Scenario(batch, devices, 1, "none", args.window, traffic, code="bare stack")
    go, stop = asyncio.Event(), asyncio.Event()
    tasks = [asyncio.create_task(device(stack.ws, "stack", batch, args.window, ts0, go, stop, traffic))
             for _ in range(devices)]  # fmt: skip
    await devices_connected(tasks, traffic, devices)
    pids = {"hub": [stack.process.pid], "client": [os.getpid()]}  # type: ignore[union-attr]
    cpu_before = {name: cpu_seconds(group) for name, group in pids.items()}
    cpu_before["machine"] = machine_busy_seconds()
    traffic.first_send = time.perf_counter()
    go.set()
    await asyncio.sleep(args.seconds)
    stop.set()
    await asyncio.gather(*tasks)
    result.cpu = {name: cpu_seconds(group) - cpu_before[name] for name, group in pids.items()}
    result.cpu["db"] = 0.0
    result.cpu["machine"] = machine_busy_seconds() - cpu_before["machine"]
    result.stored = result.sent  # nothing is stored: every acked reading counts
    return result


def writer_totals(hubs: list[HubProcess]) -> list[float]:
    """Flushes, readings flushed and seconds spent in committed flushes, summed over the hubs' /metrics."""
    names = ("hub_writer_flush_seconds_count", "hub_writer_batch_rows_sum", "hub_writer_flush_seconds_sum")
    samples = [hub.metrics() for hub in hubs]
    return [sum(sample.get(name, 0.0) for sample in samples) for name in names]


def stored_count(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM ingest_reading").fetchone()[0]


def readings_clear(url: str) -> None:
    """Every scenario starts from empty readings tables (the same index sizes for every comparison)."""
    with psycopg.connect(url) as conn:
        conn.execute(f"TRUNCATE {READINGS_TABLES}")


def copy_ceiling(url: str, chunk_rows: int) -> tuple[int, float]:
    """COPY the stored rows into an identical scratch table (same columns, key and indexes): (rows, seconds).

    The rows are read out first; only the COPYs and their commits are timed, one transaction per chunk.
    """
    with psycopg.connect(url) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_copy_ceiling")
        conn.execute("CREATE TABLE bench_copy_ceiling (LIKE ingest_reading INCLUDING ALL)")
        if interval := hypertable_interval(conn, "ingest_reading"):  # TimescaleDB: COPY into a hypertable alike
            conn.execute("SELECT create_hypertable('bench_copy_ceiling', 'ts', chunk_time_interval => %s)", [interval])
        conn.commit()
        text = bytearray()
        # A query, not the table: COPY of a hypertable's parent table copies nothing.
        with conn.cursor().copy("COPY (SELECT device_id, key, ts, value FROM ingest_reading) TO STDOUT") as copy:
            for data in copy:
                text += data
        lines = bytes(text).splitlines(keepends=True)
        chunks = [b"".join(lines[i : i + chunk_rows]) for i in range(0, len(lines), chunk_rows)]
        started = time.perf_counter()
        for chunk in chunks:
            with conn.cursor().copy("COPY bench_copy_ceiling (device_id, key, ts, value) FROM STDIN") as copy:
                copy.write(chunk)
            conn.commit()
        seconds = time.perf_counter() - started
        conn.execute("DROP TABLE bench_copy_ceiling")
        conn.commit()
    return len(lines), seconds


def hypertable_interval(conn: psycopg.Connection[Any], table: str) -> object | None:
    """The chunk interval of `table` where it is a TimescaleDB hypertable, else None."""
    if not conn.execute("SELECT to_regclass('timescaledb_information.dimensions') IS NOT NULL").fetchone()[0]:
        return None
    query = "SELECT time_interval FROM timescaledb_information.dimensions WHERE hypertable_name = %s"
    row = conn.execute(query, [table]).fetchone()
    return row[0] if row else None


async def connect_check(hubs: list[HubProcess], devices: list[BenchDevice]) -> None:
    """One message through each hub before anything is timed: its writer pool and code paths are warm."""
    for hub in hubs:
        for d in devices[:1]:
            async with DeviceClient.connect(hub.ws, d.token, open_timeout=30) as client:
                await client.send('{"warm": 1}')
                await client.all_acked()


@dataclass
class Setup:
    """One configuration under test: its hubs, their database and the devices registered there."""

    code: str
    layer: str
    processes: int
    url: str
    devices: list[BenchDevice]
    hubs: list[HubProcess] = field(default_factory=list)


async def run(args: argparse.Namespace) -> int:
    results: list[Scenario] = []
    with bench_database("ingest", redis_url=args.redis_url, **dict(args.set)) as env, contextlib.ExitStack() as stack:
        url = env["HUB_DATABASE_URL"]
        devices = devices_copy(url, args.devices, prefix="i")
        setups = [
            Setup("", layer, processes, url, devices)
            for layer, processes in itertools.product(args.layers, args.process_counts)
        ]
        if args.baseline:
            root, base_env = stack.enter_context(baseline_tree(args.baseline, env, args.redis_url))
            base_url = base_env["HUB_DATABASE_URL"]
            base_devices = devices_copy(base_url, args.devices, prefix="i")
            setups += [Setup(args.baseline, s.layer, s.processes, base_url, base_devices) for s in setups]
        console.print(
            f"ingest bench: {args.devices} devices, window {args.window} frames, {args.seconds:.0f} s per scenario, "
            f"batches {args.batches}, layers {args.layers}, processes {args.process_counts}, {args.rounds} round(s)"
            + (f", this tree vs {args.baseline}" if args.baseline else "")
        )
        # Every configuration's hubs run for the whole bench (idle while another is measured), so rounds can
        # alternate configurations: a burst of load from elsewhere on the machine then hits all of them.
        for setup in setups:
            prefix = f"{env['HUB_CHANNEL_PREFIX']}{setup.layer}{setup.processes}{'base' if setup.code else ''}"
            extra = {"HUB_CHANNEL_LAYER": setup.layer, "HUB_CHANNEL_PREFIX": prefix}
            if setup.code:
                setup.hubs = stack.enter_context(hubs_running(base_env, setup.processes, root=root, **extra))
            else:
                setup.hubs = stack.enter_context(hubs_running(env, setup.processes, **extra))
            await connect_check(setup.hubs, setup.devices)
        bare = None if args.no_ceiling else stack.enter_context(stack_running(env))
        bare_runs: dict[tuple[int, int], Scenario] = {}
        ts0 = now_ms() - 30 * 86_400_000  # a month ago, one ms per reading onwards
        for round_ in range(args.rounds):
            ceiling = None
            for setup, batch in itertools.product(setups, args.batches):
                readings_clear(setup.url)
                result = await scenario_run(setup, args, batch, ts0)
                result.round = round_
                results.append(result)
                console.print(summary(result))
                if bare is not None and (round_, batch) not in bare_runs:
                    bare_runs[round_, batch] = await stack_run(bare, args, batch, len(setup.devices), ts0)
                    r = bare_runs[round_, batch]
                    p50, p99 = p50_p99(r.traffic.latencies)
                    console.print(
                        f"  stack ceiling B={batch}: {r.frames_rate:,.0f} frames/s, ack p50/p99"
                        f" {p50 * 1000:.0f}/{p99 * 1000:.0f} ms, cores bare app/client"
                        f" {r.cpu['hub'] / r.seconds:.2f}/{r.cpu['client'] / r.seconds:.2f}"
                    )
                result.stack = bare_runs.get((round_, batch))
                if ceiling is None and batch == max(args.batches) and not args.no_ceiling:
                    rows, seconds = copy_ceiling(setup.url, WRITER_BATCH_ROWS)
                    ceiling = rows / seconds
                    console.print(f"  COPY ceiling: {rows:,} rows in {seconds:.2f} s = {ceiling:,.0f} rows/s")
            for result in results[-len(setups) * len(args.batches) :]:
                result.ceiling = ceiling
    report(results, args.rounds)
    return 0 if all(r.stored == r.sent for r in results) else 1


def summary(r: Scenario) -> str:
    """Two lines per scenario: the counts, then where the time went (CPU, the writer's flushes)."""
    fanout = "" if r.fanned_out is None else f", fanned out {r.fanned_out:,}"
    flushes, rows, flushing = r.writer
    return (
        f"  {r.label}: sent {r.sent:,}, stored {r.stored:,}{fanout} in {r.seconds:.1f} s\n"
        f"    cores busy hub/db/client/machine {r.cpu_share()}; writer: {flushes:,.0f} flushes of"
        f" {rows / max(flushes, 1):,.0f} readings, {flushing / max(flushes, 1) * 1000:.0f} ms each,"
        f" {flushing / r.seconds / r.processes:.2f} in flight on average"
    )


def report(results: list[Scenario], rounds: int) -> None:
    rows = []
    for r in results:
        p50, p99 = p50_p99(r.traffic.latencies)
        fanout = "off" if r.fanned_out is None else f"{r.fanned_out:,} (+{r.fanout_lag * 1000:.0f} ms)"
        rows.append(
            [
                r.label + (f" #{r.round + 1}" if rounds > 1 else ""),
                f"{r.frames_rate:,.0f}",
                f"{r.readings_rate:,.0f}",
                f"{p50 * 1000:.0f} / {p99 * 1000:.0f}",
                f"{r.sent:,} / {r.stored:,} / {r.sent - r.stored:,}",
                fanout,
                r.cpu_share(),
                f"{r.readings_rate / r.ceiling:.2f}" if r.ceiling else "-",
                f"{r.frames_rate / r.stack.frames_rate:.2f}" if r.stack else "-",
                r.target(),
            ]
        )
    columns = [
        "scenario",
        "frames/s",
        "readings/s stored",
        "ack p50 / p99 ms",
        "sent / stored / lost",
        "fanned out (lag)",
        "cores hub/db/client/all",
        "÷ COPY",
        "÷ stack",
        "target",
    ]
    table("Ingest over WebSocket", columns, rows)
    ceilings = sorted({r.ceiling for r in results if r.ceiling})
    if ceilings:
        console.print(
            f"COPY ceiling: {', '.join(f'{c:,.0f}' for c in ceilings)} rows/s (psycopg COPY of each round's B="
            f"{max(r.batch for r in results)} rows into a copy of ingest_reading, {WRITER_BATCH_ROWS:,} rows per"
            " transaction); ÷ COPY is each scenario's readings/s over its round's ceiling"
        )
    if rounds > 1:
        medians(results)
    if lost := [r for r in results if r.stored != r.sent]:
        console.print(f"[red]readings lost in {len(lost)} scenario(s)[/]")


def medians(results: list[Scenario]) -> None:
    """Per scenario, the median over the rounds of each figure."""
    rows = []
    for label in dict.fromkeys(r.label for r in results):
        runs = [r for r in results if r.label == label]
        latencies = [p50_p99(r.traffic.latencies) for r in runs]
        ratios = [r.readings_rate / r.ceiling for r in runs if r.ceiling]
        stacks = [r.frames_rate / r.stack.frames_rate for r in runs if r.stack]
        lags = [r.fanout_lag for r in runs if r.fanned_out is not None]
        sent, stored = sum(r.sent for r in runs), sum(r.stored for r in runs)
        rows.append(
            [
                label,
                f"{statistics.median(r.frames_rate for r in runs):,.0f}",
                f"{statistics.median(r.readings_rate for r in runs):,.0f}",
                f"{statistics.median(p[0] for p in latencies) * 1000:.0f}"
                f" / {statistics.median(p[1] for p in latencies) * 1000:.0f}",
                f"{sent:,} / {stored:,} / {sent - stored:,}",
                f"+{statistics.median(lags) * 1000:.0f} ms" if lags else "off",
                f"{statistics.median(ratios):.2f}" if ratios else "-",
                f"{statistics.median(stacks):.2f}" if stacks else "-",
            ]
        )
    columns = ["scenario", "frames/s", "readings/s stored", "ack p50 / p99 ms", "sent / stored / lost (all rounds)"]
    table(f"Medians over {len(runs)} rounds", [*columns, "fan-out lag", "÷ COPY", "÷ stack"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--batches", default="100,1", help="readings per frame, one scenario each (default 100,1)")
    parser.add_argument("--window", type=int, default=8, help="unacked frames per connection")
    parser.add_argument("--seconds", type=float, default=10.0, help="sending time of each scenario")
    parser.add_argument("--layer", choices=[*LAYERS, "both"], default="pubsub", help="HUB_CHANNEL_LAYER")
    parser.add_argument("--processes", type=int, default=1, help="N > 1: measure 1, then N hub processes")
    parser.add_argument("--rounds", type=int, default=1, help="repeat every scenario, alternating; medians")
    parser.add_argument("--no-fanout", action="store_true", help="no channel-layer subscriber")
    parser.add_argument("--no-ceiling", action="store_true", help="skip the COPY ceiling")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/11")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        type=lambda s: tuple(s.split("=", 1)),
        metavar="HUB_X=V",
        help="a hub setting for this run (repeatable), e.g. HUB_WRITER_FLUSH_MS=5",
    )
    parser.add_argument("--baseline", metavar="REV", help="also run the hub code of this git revision, alternating")
    args = parser.parse_args()
    args.batches = [int(b) for b in args.batches.split(",")]
    args.layers = list(LAYERS) if args.layer == "both" else [args.layer]
    args.process_counts = [1, args.processes] if args.processes > 1 else [1]
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        sys.exit(runner.run(run(args)))


if __name__ == "__main__":
    main()
