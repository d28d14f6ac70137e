"""Connection scale: one hub process holding N mostly idle device WebSockets (issue: scale-out).

Each device sends one reading every --interval seconds (with jitter) and waits for its ack. Prints the
hub's RSS per connection, ack latency p50/p99 in the steady window, and readings/s stored. Loopback only.

    .venv/bin/python bench/scale.py --devices 10000 --interval 5 --seconds 30
"""

import argparse
import asyncio
import contextlib
import gc
import os
import random
import re
import time

import websockets
from harness import (
    bench_database,
    console,
    cpu_seconds,
    devices_copy,
    hubs_running,
    machine_busy_seconds,
    p50_p99,
    progress,
    rss_kib,
    table,
)

from clients.device import DeviceClient, Handled
from core.collector import GC_THRESHOLDS


async def device(
    hub: str, token: str, interval: float, latencies: list[float], connected: list[int], stop: asyncio.Event
) -> None:
    options = {"open_timeout": 30, "ping_interval": None, "max_queue": 4}

    def handled(frame: Handled) -> None:
        latencies.append(frame.latency)

    async with contextlib.AsyncExitStack() as stack:
        while True:  # a handshake that times out in the connection storm is retried, as a real device would
            try:
                connecting = DeviceClient.connect(hub, token, on_handled=handled, **options)
                client = await stack.enter_async_context(connecting)
                break
            except (OSError, TimeoutError, websockets.WebSocketException):
                await asyncio.sleep(random.uniform(1, 3))
        connected[0] += 1
        await asyncio.sleep(random.uniform(0, interval))  # spread the load
        while not stop.is_set():
            await client.acked(await client.send('{"t": %d}' % (client.sent + 1)))  # noqa: UP031
            await asyncio.sleep(interval * random.uniform(0.8, 1.2))


async def connect_all(
    hub: str, tokens: list[str], args: argparse.Namespace, latencies: list[float], stop: asyncio.Event
) -> tuple[list[asyncio.Task[None]], int]:
    """Open the idle devices' sockets, 100 every 0.2 s, with a progress bar: their tasks, how many connected."""
    connected = [0]
    tasks = []
    started = time.monotonic()
    with progress() as bar:
        task = bar.add_task("connecting", total=len(tokens), status="")
        for i, token in enumerate(tokens, 1):
            tasks.append(asyncio.create_task(device(hub, token, args.interval, latencies, connected, stop)))
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
            stop = asyncio.Event()
            latencies: list[float] = []
            warm = asyncio.create_task(device(hub.ws, tokens[0], 1.0, [], [0], stop))
            await asyncio.sleep(2)
            baseline = rss_kib(hub.process.pid)
            idle, connected = await connect_all(hub.ws, tokens[1:], args, latencies, stop)
            # This client's own collector passes over its thousands of sockets must not count as the hub's latency
            # (as bench/dashboards.py's viewers): its connections are left out of full passes, young ones rarer.
            gc.freeze()
            gc.set_threshold(*GC_THRESHOLDS)
            tasks = [warm, *idle]
            await asyncio.sleep(args.interval * 1.5)  # every device has sent at least once
            latencies.clear()
            window_start = time.monotonic()
            before = await asyncio.to_thread(hub.metrics)
            cpu_before, busy_before = cpu_seconds([hub.process.pid, os.getpid()]), machine_busy_seconds()
            hub_cpu_before = cpu_seconds([hub.process.pid])
            await asyncio.sleep(args.seconds)
            window = time.monotonic() - window_start
            sample = list(latencies)
            after = await asyncio.to_thread(hub.metrics)
            hub_cpu = (cpu_seconds([hub.process.pid]) - hub_cpu_before) / window
            bench_cpu = (cpu_seconds([hub.process.pid, os.getpid()]) - cpu_before) / window - hub_cpu
            machine = (machine_busy_seconds() - busy_before) / window
            server_p50, server_p99 = histogram_quantiles(before, after, "hub_ack_latency_seconds", transport="ws")
            rss = rss_kib(hub.process.pid)
            stop.set()
            p50, p99 = p50_p99(sample)
            rows = [
                ("idle device WebSockets held", connected),
                ("hub RSS before / after", f"{baseline / 1024:.1f} MiB / {rss / 1024:.1f} MiB"),
                ("RSS per connection", f"{(rss - baseline) / max(connected, 1):.1f} KiB"),
                ("readings acked in window", f"{len(sample)} ({len(sample) / window:.0f}/s)"),
                ("ack latency p50 / p99 (device side)", f"{p50 * 1000:.1f} ms / {p99 * 1000:.1f} ms"),
                ("queued→commit p50 / p99 (hub side, histogram)", f"≤ {server_p50} s / ≤ {server_p99} s"),
                ("cores busy: hub / load generator / machine", f"{hub_cpu:.2f} / {bench_cpu:.2f} / {machine:.2f}"),
                ("ulimit -n (this process)", os.sysconf("SC_OPEN_MAX")),
            ]
            table("Connection scale, one hub process", ["figure", "value"], rows)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def histogram_quantiles(before: dict[str, float], after: dict[str, float], metric: str, **labels: str) -> tuple:
    """p50 and p99 (upper bucket bounds) of a Prometheus histogram over the window between two scrapes."""
    buckets = []
    for name, count in after.items():
        found = re.fullmatch(rf"{metric}_bucket\{{(.*)\}}", name)
        if not found:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', found.group(1)))
        if all(have.get(k) == v for k, v in labels.items()):
            buckets.append((float(have["le"]), count - before.get(name, 0.0)))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0
    return tuple(next((le for le, n in buckets if n >= q * total), float("nan")) for q in (0.5, 0.99))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between a device's readings")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the measured steady window")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
