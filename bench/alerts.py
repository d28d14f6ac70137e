"""Alert evaluation cost: ingest throughput with no rules vs 1,000 threshold rules across 1,000 devices,
measured in the same run against the same hub process (PostgreSQL + Redis, loopback only).

    .venv/bin/python bench/alerts.py [--devices 1000 --seconds 15 --batch 20]
"""

import argparse
import asyncio
import hashlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import psycopg
import websockets

ROOT = Path(__file__).resolve().parent.parent
ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DB = "hub_bench_alerts"
WINDOW = 8  # unacked frames per connection


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare(url: str, env: dict[str, str], devices: int) -> list[str]:
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {DB}")
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    tokens = [secrets.token_urlsafe(24) for _ in range(devices)]
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'devices_device'"
            " AND is_nullable = 'NO' AND column_default IS NULL AND data_type LIKE 'char%%'"
            " AND column_name NOT IN ('key', 'name', 'token_hash')"
        )
        extra = [row[0] for row in cur.fetchall()]
        columns = ", ".join(["key", "name", "created_at", "token_hash", *extra])
        with cur.copy(f"COPY devices_device ({columns}) FROM STDIN") as copy:
            for i, token in enumerate(tokens):
                copy.write_row((f"a{i}", "", "now", hashlib.sha256(token.encode()).hexdigest(), *[""] * len(extra)))
    return tokens


def add_rules(url: str) -> int:
    """One threshold rule per device on key `t` (never breached: this measures evaluation, not churn)."""
    with psycopg.connect(url) as conn:
        cur = conn.execute(
            """INSERT INTO alerts_alertrule (name, enabled, device_id, device_pattern, key, kind, condition,
                   threshold, duration_seconds, hysteresis, no_data_seconds, severity, webhook_url, created_at)
               SELECT 'hot ' || key, true, id, '', 't', 'threshold', 'gt', 1e9, 60, 1, 0, 'warning', '', now()
               FROM devices_device"""
        )
        return cur.rowcount


async def stream(url: str, batch: int, stop: asyncio.Event, counts: list[int], ts0: int) -> None:
    async with websockets.connect(url, open_timeout=60, max_queue=None) as ws:
        sent = acked = 0
        ts = ts0
        window = asyncio.Semaphore(WINDOW)

        async def acks() -> None:
            nonlocal acked
            async for raw in ws:
                upto = orjson.loads(raw)["ack"]
                for _ in range(upto - acked):
                    window.release()
                counts[0] += (upto - acked) * batch
                acked = upto

        reader = asyncio.create_task(acks())
        while not stop.is_set():
            await window.acquire()
            frame = [{"ts": ts + i, "values": {"t": float(i % 100)}} for i in range(batch)]
            ts += batch
            sent += 1
            await ws.send(orjson.dumps(frame).decode())
        await asyncio.sleep(0.5)
        reader.cancel()


async def measure(base: str, tokens: list[str], batch: int, seconds: float, ts0: int) -> float:
    stop = asyncio.Event()
    counts = [0]
    tasks = [asyncio.create_task(stream(f"{base}/{t}/telemetry", batch, stop, counts, ts0)) for t in tokens]
    await asyncio.sleep(3)  # connect and warm up
    start_count, start = counts[0], time.monotonic()
    await asyncio.sleep(seconds)
    rate = (counts[0] - start_count) / (time.monotonic() - start)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    return rate


async def run(args: argparse.Namespace) -> None:
    url = f"postgresql://postgres@127.0.0.1:5432/{DB}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env.update(
        HUB_DATABASE_URL=url,
        HUB_REDIS_URL="redis://127.0.0.1:6379/12",
        HUB_SECRET_KEY="bench-" + "x" * 50,
        HUB_VAR_DIR=tempfile.mkdtemp(prefix="hub-bench-alerts-"),
        HUB_LOG_LEVEL="WARNING",
        HUB_ALERT_RULES_REFRESH_SECONDS="1",
    )
    tokens = prepare(url, env, args.devices)
    port = free_port()
    hub = subprocess.Popen([sys.executable, "manage.py", "serve", "--port", str(port)], cwd=ROOT, env=env)  # noqa: ASYNC220
    try:
        await asyncio.sleep(3)
        base = f"ws://127.0.0.1:{port}/ws/v1"
        ts0 = time.time_ns() // 1_000_000 - 86_400_000
        without = await measure(base, tokens, args.batch, args.seconds, ts0)
        print(f"no rules: {without:,.0f} readings/s acked")
        rules = add_rules(url)
        await asyncio.sleep(2)  # the engine refreshes its rule snapshot
        with_rules = await measure(base, tokens, args.batch, args.seconds, ts0 + 10_000_000)
        print(f"{rules} rules: {with_rules:,.0f} readings/s acked")
        print()
        print("| scenario | readings/s | ratio |")
        print("| --- | --- | --- |")
        print(f"| {args.devices} devices, no rules | {without:,.0f} | 1.00 |")
        print(f"| {args.devices} devices, {rules} rules | {with_rules:,.0f} | {with_rules / without:.2f} |")
    finally:
        hub.send_signal(signal.SIGTERM)
        hub.wait(timeout=60)
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--batch", type=int, default=20, help="readings per frame")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
