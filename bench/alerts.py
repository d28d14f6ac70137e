"""Alert evaluation cost: ingest throughput with no rules vs 1,000 threshold rules across 1,000 devices,
measured in the same run against the same hub process (PostgreSQL + Redis, loopback only).

    .venv/bin/python bench/alerts.py [--devices 1000 --seconds 15 --batch 20]
"""

import argparse
import asyncio
import time

import orjson
import psycopg
import websockets
from harness import bench_database, console, devices_copy, hubs_running, progress, table

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


async def measure(label: str, base: str, tokens: list[str], batch: int, seconds: float, ts0: int) -> float:
    stop = asyncio.Event()
    counts = [0]
    tasks = [asyncio.create_task(stream(f"{base}/{t}/telemetry", batch, stop, counts, ts0)) for t in tokens]
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
            base = f"{hub.ws}/ws/v1"
            ts0 = time.time_ns() // 1_000_000 - 86_400_000
            without = await measure("no rules", base, tokens, args.batch, args.seconds, ts0)
            console.print(f"no rules: {without:,.0f} readings/s acked")
            rules = add_rules(url)
            await asyncio.sleep(2)  # the engine refreshes its rule snapshot
            with_rules = await measure(f"{rules} rules", base, tokens, args.batch, args.seconds, ts0 + 10_000_000)
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
