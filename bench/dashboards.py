"""Dashboard fan-out under ingest: V logged-in viewers follow D devices that send R readings/s in total.

Each reading carries its send time (wall clock, seconds) as its value, so every viewer measures
device -> hub -> commit -> channel layer -> browser socket latency for every reading it receives. Prints
latency p50/p99, stream messages/s and readings/s delivered, and per-viewer completeness against the
database (missing and duplicate readings), with the hub's CPU. One hub process, PostgreSQL + Redis,
loopback only.

    .venv/bin/python bench/dashboards.py [--devices 10 --viewers 100 --rate 1000 --seconds 20 --batch 1]
"""

import argparse
import asyncio
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field

import httpx
import orjson
import psycopg
import websockets
from harness import (
    ROOT,
    bench_database,
    console,
    cpu_seconds,
    devices_copy,
    hubs_running,
    p50_p99,
    progress,
    table,
)

from core.epoch import now_ms
from ingest.client import DeviceClient, Handled

OPERATOR, PASSWORD = "bench-operator", "bench-operator-password"


@dataclass
class Viewer:
    device: str
    latencies: list[float] = field(default_factory=list)
    received: list[int] = field(default_factory=list)  # ts of every reading delivered, duplicates included
    messages: int = 0
    closed: int | None = None


def operator_create(env: dict[str, str]) -> None:
    command = [sys.executable, "manage.py", "createsuperuser", "--noinput", "--username", OPERATOR, "--email", ""]
    subprocess.run(command, cwd=ROOT, env={**env, "DJANGO_SUPERUSER_PASSWORD": PASSWORD}, check=True)


async def session_cookie(http: str) -> str:
    """Log in through the real login form (CSRF included); the Cookie header for the streams."""
    async with httpx.AsyncClient(base_url=http) as client:
        await client.get("/login/")
        form = {"username": OPERATOR, "password": PASSWORD, "csrfmiddlewaretoken": client.cookies["csrftoken"]}
        answer = await client.post("/login/", data=form, headers={"Referer": f"{http}/login/"})
        if answer.status_code != 302:
            raise SystemExit(f"login failed: {answer.status_code}")
        return "; ".join(f"{k}={v}" for k, v in client.cookies.items())


async def watch(ws_base: str, http: str, cookie: str, viewer: Viewer, ready: list[int], stop: asyncio.Event) -> None:
    headers = {"Cookie": cookie, "Origin": http}
    url = f"{ws_base}/ws/v1/devices/{viewer.device}/stream"
    async with websockets.connect(url, additional_headers=headers, max_queue=None) as ws:
        assert orjson.loads(await ws.recv())["type"] == "subscribed"
        await ws.send(orjson.dumps({"since": now_ms()}).decode())
        assert orjson.loads(await ws.recv())["type"] == "history"
        ready[0] += 1
        try:
            while not stop.is_set():
                try:
                    raw = await asyncio.wait_for(ws.recv(), 0.5)
                except TimeoutError:
                    continue
                arrived = time.time()
                message = orjson.loads(raw)
                if message["type"] != "readings":
                    continue
                viewer.messages += 1
                for ts, _key, sent_at in message["readings"]:
                    viewer.received.append(ts)
                    viewer.latencies.append(arrived - sent_at)
        except websockets.ConnectionClosed as closed:
            viewer.closed = closed.rcvd.code if closed.rcvd else None


async def device(
    ws_base: str, token: str, rate: float, batch: int, sent: list[int], acks: list[float], stop: asyncio.Event
) -> None:
    """`rate` readings/s in frames of `batch`, on an absolute schedule; acks are timed, not awaited."""

    def handled(frame: Handled) -> None:
        acks.append(frame.latency)  # each frame's send→ack time (the commit part of the latency)

    async with DeviceClient.connect(ws_base, token, on_handled=handled, max_queue=None) as client:
        interval = batch / rate
        next_at = time.monotonic()
        last_ts = 0
        while not stop.is_set():
            readings = []
            for _ in range(batch):
                last_ts = max(now_ms(), last_ts + 1)
                readings.append({"ts": last_ts, "values": {"sent": time.time()}})
            await client.send(orjson.dumps(readings).decode())
            sent[0] += batch
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        await asyncio.sleep(1.0)  # let the last acks and fan-out arrive (within the measured duration, as always)


def stored_per_device(url: str) -> dict[str, set[int]]:
    query = (
        "SELECT d.key, (extract(epoch FROM r.ts) * 1000)::bigint FROM ingest_reading r"
        " JOIN devices_device d ON d.id = r.device_id"
    )
    stored: dict[str, set[int]] = {}
    with psycopg.connect(url) as conn:
        for key, ts in conn.execute(query):
            stored.setdefault(key, set()).add(ts)
    return stored


async def run(args: argparse.Namespace, env: dict[str, str]) -> None:
    devices = devices_copy(env["HUB_DATABASE_URL"], args.devices, prefix="dash")
    operator_create(env)
    with hubs_running(env) as (hub,):
        http = f"http://127.0.0.1:{hub.port}"
        cookie = await session_cookie(http)
        viewers = [Viewer(devices[i % len(devices)].key) for i in range(args.viewers)]
        stop_viewers, stop_devices = asyncio.Event(), asyncio.Event()
        ready, sent, acks = [0], [0], []
        with progress() as bar:
            task = bar.add_task("viewers subscribed", total=len(viewers), status="")
            watchers = [asyncio.create_task(watch(hub.ws, http, cookie, v, ready, stop_viewers)) for v in viewers]
            while ready[0] < len(viewers):
                bar.update(task, completed=ready[0])
                await asyncio.sleep(0.1)
            bar.update(task, completed=ready[0])
            per_device = args.rate / args.devices
            started, cpu_before = time.monotonic(), cpu_seconds([hub.process.pid])
            senders = [
                asyncio.create_task(device(hub.ws, d.token, per_device, args.batch, sent, acks, stop_devices))
                for d in devices
            ]
            task = bar.add_task("streaming", total=args.seconds, status="")
            while (elapsed := time.monotonic() - started) < args.seconds:
                delivered = sum(len(v.received) for v in viewers)
                bar.update(task, completed=elapsed, status=f"sent {sent[0]:,}, delivered {delivered:,}")
                await asyncio.sleep(0.25)
            stop_devices.set()
            await asyncio.gather(*senders)
            duration = time.monotonic() - started
            hub_cpu = cpu_seconds([hub.process.pid]) - cpu_before
            await asyncio.sleep(1.0)
            stop_viewers.set()
            await asyncio.gather(*watchers)

    stored = stored_per_device(env["HUB_DATABASE_URL"])
    stored_total = sum(map(len, stored.values()))
    missing = sum(len(stored.get(v.device, set()) - set(v.received)) for v in viewers)
    duplicates = sum(len(v.received) - len(set(v.received)) for v in viewers)
    # Latency after a warm-up second, so connection set-up does not count.
    latencies = [ms * 1000 for v in viewers for ms in v.latencies[int(len(v.latencies) / args.seconds) :]]
    p50, p99 = p50_p99(latencies)
    messages = sum(v.messages for v in viewers)
    delivered = sum(len(v.received) for v in viewers)
    closed = [v.closed for v in viewers if v.closed is not None]
    table(
        f"dashboards: {args.viewers} viewers on {args.devices} devices, {args.rate:g} readings/s "
        f"in frames of {args.batch}, {duration:.1f} s",
        ["figure", "value"],
        [
            ["readings sent / stored", f"{sent[0]:,} / {stored_total:,}"],
            ["device→viewer latency p50 / p99", f"{p50:.1f} ms / {p99:.1f} ms"],
            [
                "of which send→ack (commit) p50 / p99",
                "{:.1f} ms / {:.1f} ms".format(*(1000 * x for x in p50_p99(acks))),
            ],
            ["stream messages/s (all viewers)", f"{messages / duration:,.0f}"],
            ["readings delivered/s (all viewers)", f"{delivered / duration:,.0f}"],
            ["missing / duplicate readings (all viewers)", f"{missing:,} / {duplicates:,}"],
            ["viewers closed early", f"{len(closed)} {closed[:5] if closed else ''}"],
            ["hub CPU (cores)", f"{hub_cpu / duration:.2f}"],
        ],
    )
    if missing or duplicates or closed:
        sys.exit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=10)
    parser.add_argument("--viewers", type=int, default=100)
    parser.add_argument("--rate", type=float, default=1000.0, help="readings per second, all devices together")
    parser.add_argument("--batch", type=int, default=1, help="readings per device frame")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--redis", default=os.environ.get("HUB_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = parser.parse_args()
    console.print(f"[bold]dashboards[/]: {args.viewers} viewers, {args.devices} devices, {args.rate:g} readings/s")
    with bench_database("dashboards", redis_url=args.redis) as env:
        asyncio.run(run(args, env))


if __name__ == "__main__":
    main()
