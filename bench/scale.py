"""Connection scale: one hub process holding N mostly idle device WebSockets (issue: scale-out).

Each device sends one reading every --interval seconds (with jitter) and waits for its ack. Prints the
hub's RSS per connection, ack latency p50/p99 in the steady window, and readings/s stored. Loopback only.

    .venv/bin/python bench/scale.py --devices 10000 --interval 5 --seconds 30
"""

import argparse
import asyncio
import hashlib
import os
import random
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import websockets

ROOT = Path(__file__).resolve().parent.parent
ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DB = "hub_bench_scale"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def prepare(env: dict[str, str], devices: int) -> list[str]:
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {DB}")
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    tokens = [secrets.token_urlsafe(24) for _ in range(devices)]
    with psycopg.connect(env["HUB_DATABASE_URL"]) as conn, conn.cursor() as cur:
        # Other NOT NULL text columns of the registry (none today) get '' so the bench survives new fields.
        cur.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'devices_device'"
            " AND is_nullable = 'NO' AND column_default IS NULL AND data_type LIKE 'char%%'"
            " AND column_name NOT IN ('key', 'name', 'token_hash')"
        )
        extra = [row[0] for row in cur.fetchall()]
        columns = ", ".join(["key", "name", "created_at", "token_hash", *extra])
        with cur.copy(f"COPY devices_device ({columns}) FROM STDIN") as copy:
            for i, token in enumerate(tokens):
                copy.write_row((f"s{i}", "", "now", hashlib.sha256(token.encode()).hexdigest(), *[""] * len(extra)))
    return tokens


async def device(url: str, interval: float, latencies: list[float], connected: list[int], stop: asyncio.Event) -> None:
    while True:  # a handshake that times out in the connection storm is retried, as a real device would
        try:
            ws = await websockets.connect(url, open_timeout=30, ping_interval=None, max_queue=4)
            break
        except (OSError, TimeoutError, websockets.WebSocketException):
            await asyncio.sleep(random.uniform(1, 3))  # noqa: S311
    async with ws:
        connected[0] += 1
        frame = 0
        await asyncio.sleep(random.uniform(0, interval))  # noqa: S311 - spread the load
        while not stop.is_set():
            frame += 1
            sent = time.perf_counter()
            await ws.send('{"t": %d}' % frame)  # noqa: UP031
            await ws.recv()
            latencies.append(time.perf_counter() - sent)
            await asyncio.sleep(interval * random.uniform(0.8, 1.2))  # noqa: S311


async def run(args: argparse.Namespace) -> None:
    workdir = tempfile.mkdtemp(prefix="hub-bench-scale-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env.update(
        HUB_DATABASE_URL=f"postgresql://postgres@127.0.0.1:5432/{DB}",
        HUB_REDIS_URL="redis://127.0.0.1:6379/13",
        HUB_SECRET_KEY="bench-" + "x" * 50,
        HUB_VAR_DIR=workdir,
        HUB_LOG_LEVEL="WARNING",
    )
    tokens = prepare(env, args.devices)
    port = free_port()
    hub = subprocess.Popen([sys.executable, "manage.py", "serve", "--port", str(port)], cwd=ROOT, env=env)  # noqa: ASYNC220
    try:
        await asyncio.sleep(3)
        base = f"ws://127.0.0.1:{port}/ws/v1"
        stop = asyncio.Event()
        latencies: list[float] = []
        connected = [0]
        warm = asyncio.create_task(device(f"{base}/{tokens[0]}/telemetry", 1.0, [], [0], stop))
        await asyncio.sleep(2)
        baseline = rss_kib(hub.pid)
        tasks = [warm]
        started = time.monotonic()
        for i in range(1, args.devices):
            tasks.append(
                asyncio.create_task(device(f"{base}/{tokens[i]}/telemetry", args.interval, latencies, connected, stop))
            )
            if i % 100 == 0:
                await asyncio.sleep(0.2)
                print(f"\rconnecting: {connected[0]}/{args.devices - 1}", end="", flush=True)
        while connected[0] < args.devices - 1 and time.monotonic() - started < 300:
            await asyncio.sleep(0.5)
            print(f"\rconnecting: {connected[0]}/{args.devices - 1}", end="", flush=True)
        print(f"\nconnected {connected[0]} in {time.monotonic() - started:.1f}s; steady window {args.seconds}s")
        await asyncio.sleep(args.interval * 1.5)  # every device has sent at least once
        latencies.clear()
        window_start = time.monotonic()
        await asyncio.sleep(args.seconds)
        window = time.monotonic() - window_start
        sample = sorted(latencies)
        rss = rss_kib(hub.pid)
        stop.set()
        per_connection = (rss - baseline) / max(connected[0], 1)
        q = statistics.quantiles(sample, n=100) if len(sample) > 100 else [0] * 99
        print()
        print("| figure | value |")
        print("| --- | --- |")
        print(f"| idle device WebSockets held | {connected[0]} |")
        print(f"| hub RSS before / after | {baseline / 1024:.1f} MiB / {rss / 1024:.1f} MiB |")
        print(f"| RSS per connection | {per_connection:.1f} KiB |")
        print(f"| readings acked in window | {len(sample)} ({len(sample) / window:.0f}/s) |")
        print(f"| ack latency p50 / p99 | {q[49] * 1000:.1f} ms / {q[98] * 1000:.1f} ms |")
        print(f"| ulimit -n (this process) | {os.sysconf('SC_OPEN_MAX')} |")
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        hub.send_signal(signal.SIGTERM)
        hub.wait(timeout=60)
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between a device's readings")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the measured steady window")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
