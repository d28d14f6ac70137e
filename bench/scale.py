"""Connection scale: one hub process holding N mostly idle device WebSockets (issue: scale-out).

Each device sends one reading every --interval seconds (with jitter) and waits for its ack. Prints the
hub's RSS per connection, ack latency p50/p99 in the steady window, and readings/s stored. Loopback only.

    .venv/bin/python bench/scale.py --devices 10000 --interval 5 --seconds 30
"""

import argparse
import asyncio
import os
import random
import time

import websockets
from harness import bench_database, console, devices_copy, hubs_running, p50_p99, progress, rss_kib, table


async def device(url: str, interval: float, latencies: list[float], connected: list[int], stop: asyncio.Event) -> None:
    while True:  # a handshake that times out in the connection storm is retried, as a real device would
        try:
            ws = await websockets.connect(url, open_timeout=30, ping_interval=None, max_queue=4)
            break
        except (OSError, TimeoutError, websockets.WebSocketException):
            await asyncio.sleep(random.uniform(1, 3))
    async with ws:
        connected[0] += 1
        frame = 0
        await asyncio.sleep(random.uniform(0, interval))  # spread the load
        while not stop.is_set():
            frame += 1
            sent = time.perf_counter()
            await ws.send('{"t": %d}' % frame)  # noqa: UP031
            await ws.recv()
            latencies.append(time.perf_counter() - sent)
            await asyncio.sleep(interval * random.uniform(0.8, 1.2))


async def connect_all(
    base: str, tokens: list[str], args: argparse.Namespace, latencies: list[float], stop: asyncio.Event
) -> tuple[list[asyncio.Task[None]], int]:
    """Open the idle devices' sockets, 100 every 0.2 s, with a progress bar: their tasks, how many connected."""
    connected = [0]
    tasks = []
    started = time.monotonic()
    with progress() as bar:
        task = bar.add_task("connecting", total=len(tokens), status="")
        for i, token in enumerate(tokens, 1):
            tasks.append(
                asyncio.create_task(device(f"{base}/{token}/telemetry", args.interval, latencies, connected, stop))
            )
            if i % 100 == 0:
                await asyncio.sleep(0.2)
                bar.update(task, completed=connected[0])
        while connected[0] < len(tokens) and time.monotonic() - started < 300:
            await asyncio.sleep(0.5)
            bar.update(task, completed=connected[0])
    console.print(f"connected {connected[0]} in {time.monotonic() - started:.1f}s; steady window {args.seconds}s")
    return tasks, connected[0]


async def run(args: argparse.Namespace) -> None:
    with bench_database("scale", redis_url="redis://127.0.0.1:6379/13") as env:
        tokens = [d.token for d in devices_copy(env["HUB_DATABASE_URL"], args.devices, prefix="s")]
        with hubs_running(env) as (hub,):
            base = f"{hub.ws}/ws/v1"
            stop = asyncio.Event()
            latencies: list[float] = []
            warm = asyncio.create_task(device(f"{base}/{tokens[0]}/telemetry", 1.0, [], [0], stop))
            await asyncio.sleep(2)
            baseline = rss_kib(hub.process.pid)
            idle, connected = await connect_all(base, tokens[1:], args, latencies, stop)
            tasks = [warm, *idle]
            await asyncio.sleep(args.interval * 1.5)  # every device has sent at least once
            latencies.clear()
            window_start = time.monotonic()
            await asyncio.sleep(args.seconds)
            window = time.monotonic() - window_start
            sample = list(latencies)
            rss = rss_kib(hub.process.pid)
            stop.set()
            p50, p99 = p50_p99(sample)
            rows = [
                ("idle device WebSockets held", connected),
                ("hub RSS before / after", f"{baseline / 1024:.1f} MiB / {rss / 1024:.1f} MiB"),
                ("RSS per connection", f"{(rss - baseline) / max(connected, 1):.1f} KiB"),
                ("readings acked in window", f"{len(sample)} ({len(sample) / window:.0f}/s)"),
                ("ack latency p50 / p99", f"{p50 * 1000:.1f} ms / {p99 * 1000:.1f} ms"),
                ("ulimit -n (this process)", os.sysconf("SC_OPEN_MAX")),
            ]
            table("Connection scale, one hub process", ["figure", "value"], rows)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between a device's readings")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the measured steady window")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
