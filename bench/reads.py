"""Reads never slow ingest: a well-behaved device's ack latency alone, then while R readers pull maximal history
answers in a loop, and the hub's memory (issue 22).

    .venv/bin/python bench/reads.py                          # readers 1, 2, 4, 8, 16, 32; 10 s each, 2 rounds
    .venv/bin/python bench/reads.py --readers 8 --seconds 20 --keys 1000 --readings 3000

One hub process (`manage.py serve`, PostgreSQL + Redis) on a scratch database holding one device with --keys keys
of --readings readings each (COPYed, with their latest values and minute/hour rollups, as the writer keeps them).
A second device sends one reading every 10 ms over WebSocket, each acked after commit, for the whole run. Each
reader has its own read API token and loops over the heaviest answers there are: every key raw at the largest
limit, every key aggregated at the finest interval allowed, every key's window at 4,000 px, and a CSV export of
every key, read to the end as fast as the reader can; the readers run in a process of their own. The device runs
alone first and last; the sweep runs --rounds times, each phase's samples pooled over them. Per phase: the
device's ack p50/p99 (and ÷ alone), the hub's peak RSS over idle, answers by status (429: the read admission
refused), bytes read. The goal: ack p99 at most 1.5× alone and peak RSS within +256 MiB of idle; the first phase
past either is printed as where it breaks. Loopback only.
"""

import argparse
import asyncio
import hashlib
import multiprocessing
import os
import secrets
import time
from dataclasses import dataclass, field

import httpx
import psycopg
from harness import (
    bench_database,
    console,
    devices_copy,
    hubs_running,
    p50_p99,
    rss_kib,
    table,
)

from clients.device import DeviceClient, Handled
from core.epoch import from_epoch_ms, now_ms

DAY = 86_400_000
GOAL_ACK_RATIO = 1.5
GOAL_RSS_MIB = 256


def seed(url: str, device_key: str, keys: int, readings: int) -> tuple[int, int]:
    """`keys` x `readings` readings of the heavy device a second apart up to now, with latest values and rollups;
    returns (first ts, last ts)."""
    end = now_ms() - now_ms() % 1000
    start = end - readings * 1000
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        device_id = cur.execute("SELECT id FROM devices_device WHERE key = %s", [device_key]).fetchone()[0]
        with cur.copy("COPY ingest_reading (device_id, key, ts, value) FROM STDIN") as copy:
            for k in range(keys):
                for i in range(readings):
                    ts = start + i * 1000
                    copy.write_row((device_id, f"k{k:04d}", from_epoch_ms(ts), float((i * 7 + k) % 101)))
        cur.execute(
            "INSERT INTO ingest_latestvalue (device_id, key, ts, value, text)"
            " SELECT device_id, key, max(ts), 1.0, NULL FROM ingest_reading GROUP BY device_id, key"
        )
        for relation, width in (("ingest_rollup_1m", "1 minute"), ("ingest_rollup_1h", "1 hour")):
            cur.execute(
                f"INSERT INTO {relation} (device_id, key, bucket, n, sum, min, max)"  # noqa: S608 - fixed names
                f" SELECT device_id, key, date_bin(interval '{width}', ts, timestamptz 'epoch'), count(*), sum(value),"
                " min(value), max(value) FROM ingest_reading GROUP BY 1, 2, 3"
            )
    return start, end


def read_tokens(url: str, count: int) -> list[str]:
    """An operator and `count` read API tokens of theirs (each reader is its own client of the admission)."""
    tokens = [secrets.token_urlsafe(24) for _ in range(count)]
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        user_id = cur.execute(
            "INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email, is_staff,"
            " is_active, date_joined) VALUES ('!', false, 'reader', '', '', '', false, true, now()) RETURNING id"
        ).fetchone()[0]
        for i, token in enumerate(tokens):
            cur.execute(
                "INSERT INTO dashboards_apitoken (user_id, name, token_hash, scope, created_at)"
                " VALUES (%s, %s, %s, 'read', now())",
                [user_id, f"reader-{i}", hashlib.sha256(token.encode()).hexdigest()],
            )
    return tokens


@dataclass
class Phase:
    readers: int
    acks: list[float] = field(default_factory=list)  # seconds
    statuses: dict[int, int] = field(default_factory=dict)
    read_bytes: int = 0
    peak_rss_kib: int = 0


async def device(hub_ws: str, token: str, phase_of: list[Phase], stop: asyncio.Event) -> None:
    """One reading every 10 ms, the next only once the previous is acked (window 1)."""

    def handled(frame: Handled) -> None:
        phase_of[0].acks.append(frame.latency)

    async with DeviceClient.connect(hub_ws, token, on_handled=handled) as client:
        while not stop.is_set():
            await client.send(f'{{"ts": {now_ms()}, "values": {{"t": 1.5}}}}')
            await client.all_acked()
            await asyncio.sleep(0.01)  # the device's pace


def heavy_requests(key: str, start: int, end: int) -> list[tuple[str, dict]]:
    """The heaviest answers there are (no `keys`: every key of the device, as the issue's probe asked)."""
    base = f"/api/v1/devices/{key}"
    span = {"start": start, "end": end}
    return [
        (f"{base}/telemetry", {**span, "limit": 10_000}),
        (f"{base}/telemetry", {**span, "agg": "AVG", "interval": max(1000, (end - start) // 10_000)}),
        (f"{base}/window", {**span, "px": 4000}),
        (f"{base}/telemetry.csv", span),
    ]


async def reader(http: str, token: str, requests: list[tuple[str, dict]], tally: dict, stop: asyncio.Event) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=http, headers=headers, timeout=120) as client:
        i = 0
        while not stop.is_set():
            path, params = requests[i % len(requests)]
            i += 1
            try:
                async with client.stream("GET", path, params=params) as answer:
                    async for chunk in answer.aiter_raw():
                        tally["bytes"] += len(chunk)
                status = answer.status_code
            except httpx.HTTPError:
                status = 0
            tally["statuses"][status] = tally["statuses"].get(status, 0) + 1
            if status == 429:
                await asyncio.sleep(float(answer.headers.get("Retry-After", "1")))


def readers_process(http: str, tokens: list[str], requests: list[tuple[str, dict]], seconds: float, out) -> None:
    """The readers of one phase, in a process of their own: reading hundreds of MiB must not delay the device's
    event loop, or the bench would measure itself."""

    async def phase() -> dict:
        tally: dict = {"bytes": 0, "statuses": {}}
        stop = asyncio.Event()
        tasks = [asyncio.create_task(reader(http, token, requests, tally, stop)) for token in tokens]
        await asyncio.sleep(seconds)
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        return tally

    out.put(asyncio.run(phase()))


async def watch_rss(pid: int, phase_of: list[Phase], stop: asyncio.Event) -> None:
    while not stop.is_set():
        phase = phase_of[0]
        phase.peak_rss_kib = max(phase.peak_rss_kib, rss_kib(pid))
        await asyncio.sleep(0.1)


async def run(args: argparse.Namespace) -> None:
    with bench_database("reads", redis_url=args.redis_url) as env:
        url = env["HUB_DATABASE_URL"]
        heavy, steady = devices_copy(url, 2, prefix="reads-")
        console.print(f"seeding {args.keys:,} keys x {args.readings:,} readings…")
        began = time.monotonic()
        start, end = seed(url, heavy.key, args.keys, args.readings)
        console.print(f"seeded in {time.monotonic() - began:.1f} s")
        tokens = read_tokens(url, max(args.readers))
        requests = heavy_requests(heavy.key, start, end + 1)
        requests = [requests[i] for i in args.kinds]
        with hubs_running(env, **dict(pair.split("=", 1) for pair in args.hub_env)) as (hub,):
            idle_kib = rss_kib(hub.process.pid)
            # The sweep --rounds times, each phase's samples pooled over the rounds, and the device alone first and
            # last in each: on this shared machine one 15 s phase's p99 alone varied 27-46 ms from run to run.
            alone = Phase(0)
            phases = [alone] + [Phase(r) for r in args.readers]
            phase_of = [alone]
            stop_all = asyncio.Event()
            background = [
                asyncio.create_task(device(hub.ws, steady.token, phase_of, stop_all)),
                asyncio.create_task(watch_rss(hub.process.pid, phase_of, stop_all)),
            ]
            for round_ in range(args.rounds):
                for phase in [*phases, alone]:
                    phase_of[0] = phase
                    tally = await readers_phase(hub.http, tokens[: phase.readers], requests, args.seconds)
                    phase.read_bytes += tally["bytes"]
                    for status, n in tally["statuses"].items():
                        phase.statuses[status] = phase.statuses.get(status, 0) + n
                    report_phase(phase, alone, idle_kib, round_)
            stop_all.set()
            await asyncio.gather(*background, return_exceptions=True)
    summary(phases, idle_kib)
    settings = ", ".join(args.hub_env) or "defaults (HUB_READS_PER_PROCESS: half the CPUs)"
    console.print(f"{os.cpu_count()} CPUs; hub settings: {settings}; {args.keys:,} keys x {args.readings:,} readings")


async def readers_phase(http: str, tokens: list[str], requests: list, seconds: float) -> dict:
    """Run one phase's readers in a child process for `seconds` (the device keeps sending meanwhile)."""
    if not tokens:
        await asyncio.sleep(seconds)
        return {"bytes": 0, "statuses": {}}
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    child = context.Process(target=readers_process, args=(http, tokens, requests, seconds, out))
    child.start()
    tally = await asyncio.to_thread(out.get)
    await asyncio.to_thread(child.join)
    return tally


def report_phase(phase: Phase, alone: Phase, idle_kib: int, round_: int) -> None:
    p50, p99 = p50_p99(phase.acks)
    ratio = p99 / p50_p99(alone.acks)[1] if alone.acks and phase is not alone else 1.0
    console.print(
        f"round {round_ + 1}, {phase.readers:>3} readers (so far): ack p50 {p50 * 1000:.1f} ms "
        f"p99 {p99 * 1000:.1f} ms ({ratio:.2f}x alone), "
        f"peak RSS +{(phase.peak_rss_kib - idle_kib) / 1024:.0f} MiB, answers {phase.statuses}, "
        f"{phase.read_bytes / 2**20:.0f} MiB read"
    )


def summary(phases: list[Phase], idle_kib: int) -> None:
    alone_p99 = p50_p99(phases[0].acks)[1]
    rows, broke = [], None
    for phase in phases:
        p50, p99 = p50_p99(phase.acks)
        ratio = p99 / alone_p99
        over = (phase.peak_rss_kib - idle_kib) / 1024
        answered = sum(n for status, n in phase.statuses.items() if status == 200)
        refused = phase.statuses.get(429, 0)
        others = sum(n for status, n in phase.statuses.items() if status not in (200, 429))
        met = ratio <= GOAL_ACK_RATIO and over <= GOAL_RSS_MIB
        if not met and broke is None:
            broke = phase.readers
        rows.append(
            [
                phase.readers or "0 (first and last of each round)",
                f"{p50 * 1000:.1f} / {p99 * 1000:.1f}",
                f"{ratio:.2f}x",
                f"+{over:.0f}",
                f"{answered} / {refused} / {others}",
                f"{phase.read_bytes / 2**20:,.0f}",
                "met" if met else "MISSED",
            ]
        )
    columns = ["readers", "ack p50 / p99 ms", "p99 ÷ alone", "peak RSS MiB over idle", "200 / 429 / other", "MiB read"]
    table("Reads beside ingest", [*columns, f"goal (≤ {GOAL_ACK_RATIO}x, ≤ +{GOAL_RSS_MIB} MiB)"], rows)
    console.print(
        f"idle RSS {idle_kib / 1024:.0f} MiB; " + (f"breaks at {broke} readers" if broke else "met throughout")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readers", default="1,2,4,8,16,32", help="readers per phase, one phase each")
    parser.add_argument("--seconds", type=float, default=10.0, help="per phase and round")
    parser.add_argument("--rounds", type=int, default=2, help="sweeps, each phase's samples pooled over them")
    parser.add_argument("--keys", type=int, default=200)
    parser.add_argument("--readings", type=int, default=5_000, help="per key, a second apart")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/11")
    parser.add_argument("--hub-env", action="append", default=[], metavar="NAME=VALUE", help="a hub setting")
    parser.add_argument(
        "--kinds", default="0,1,2,3", help="answers the readers ask: 0 raw, 1 aggregate, 2 window, 3 CSV"
    )
    args = parser.parse_args()
    args.kinds = [int(n) for n in args.kinds.split(",")]
    args.readers = [int(n) for n in args.readers.split(",")]
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
