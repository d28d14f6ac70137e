"""Alert evaluation cost: ingest throughput with no rules vs 1,000 threshold rules across 1,000 devices,
measured in the same run against the same hub process (PostgreSQL + Redis, loopback only).

    .venv/bin/python bench/alerts.py [--devices 1000 --seconds 15 --batch 20]
"""

import argparse
import asyncio
import contextlib
import time

import orjson
import psycopg
from harness import bench_database, console, devices_copy, hubs_running, progress, table

from clients.device import DeviceClient, Handled
from core.epoch import now_ms

WINDOW = 8  # unacked frames per connection


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


async def stream(hub: str, token: str, batch: int, stop: asyncio.Event, counts: list[int], ts0: int) -> None:
    def handled(frame: Handled) -> None:
        if frame.error is None:
            counts[0] += batch

    async with DeviceClient.connect(hub, token, on_handled=handled, open_timeout=60, max_queue=None) as client:
        ts = ts0
        while not stop.is_set():
            await client.window(WINDOW)
            frame = [{"ts": ts + i, "values": {"t": float(i % 100)}} for i in range(batch)]
            ts += batch
            await client.send(orjson.dumps(frame).decode())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):  # the last frames' acks, before the socket closes
                await client.all_acked()


async def measure(label: str, hub: str, tokens: list[str], batch: int, seconds: float, ts0: int) -> float:
    stop = asyncio.Event()
    counts = [0]
    tasks = [asyncio.create_task(stream(hub, t, batch, stop, counts, ts0)) for t in tokens]
    with progress() as bar:
        task = bar.add_task(label, total=int(seconds), status="warming up")
        await asyncio.sleep(3)  # connect and warm up
        start_count, start = counts[0], time.monotonic()
        while (elapsed := time.monotonic() - start) < seconds:
            await asyncio.sleep(0.25)
            rate = (counts[0] - start_count) / max(elapsed, 1e-9)
            bar.update(task, completed=int(elapsed), status=f"{rate:,.0f} readings/s acked")
        rate = (counts[0] - start_count) / (time.monotonic() - start)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    return rate


async def run(args: argparse.Namespace) -> None:
    with bench_database("alerts", redis_url="redis://127.0.0.1:6379/12", HUB_ALERT_RULES_REFRESH_SECONDS="1") as env:
        url = env["HUB_DATABASE_URL"]
        tokens = [d.token for d in devices_copy(url, args.devices, prefix="a")]
        with hubs_running(env) as (hub,):
            ts0 = now_ms() - 86_400_000
            without = await measure("no rules", hub.ws, tokens, args.batch, args.seconds, ts0)
            console.print(f"no rules: {without:,.0f} readings/s acked")
            rules = add_rules(url)
            await asyncio.sleep(2)  # the engine refreshes its rule snapshot
            with_rules = await measure(f"{rules} rules", hub.ws, tokens, args.batch, args.seconds, ts0 + 10_000_000)
            console.print(f"{rules} rules: {with_rules:,.0f} readings/s acked")
            rows = [
                (f"{args.devices} devices, no rules", f"{without:,.0f}", "1.00"),
                (f"{args.devices} devices, {rules} rules", f"{with_rules:,.0f}", f"{with_rules / without:.2f}"),
            ]
            table("Alert evaluation cost", ["scenario", "readings/s", "ratio"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--batch", type=int, default=20, help="readings per frame")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
