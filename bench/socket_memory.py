"""What an idle device socket costs the hub, and who holds it: tracemalloc snapshots before and after N sockets.

    .venv/bin/python bench/socket_memory.py --devices 10000        # raise `ulimit -n` first

One hub process (`manage.py serve`, PostgreSQL + Redis) runs with tracemalloc on; N devices connect over WebSocket
and stay quiet. A snapshot is taken (on SIGUSR2, written to the hub's HUB_VAR_DIR) with one warm device connected
and again with all N; the difference is printed per socket, by the line that allocated it and by the first frame
outside the standard library (the part of the hub, uvicorn or websockets that asked for it), beside the process's
RSS per socket measured without tracemalloc in the same run. Loopback only; a scratch database is created and
dropped.
"""

import argparse
import asyncio
import contextlib
import signal
import sys
import sysconfig
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import websockets
from harness import ROOT, bench_database, console, devices_copy, hub_start, progress, rss_kib, table

from clients.device import DeviceClient
from testkit.process import HubProcess

# The hub with a SIGUSR2 handler that dumps a tracemalloc snapshot next to its log (nothing in the hub's code).
_TRACED = """
import os, runpy, signal, sys, tracemalloc
tracemalloc.start(int(os.environ["BENCH_TRACE_FRAMES"]))
taken = [0]
def dump(*_):
    taken[0] += 1
    tracemalloc.take_snapshot().dump(os.path.join(os.environ["HUB_VAR_DIR"], f"snap-{taken[0]}"))
signal.signal(signal.SIGUSR2, dump)
sys.argv[0] = "manage.py"
runpy.run_path("manage.py", run_name="__main__")
"""
STDLIB = sysconfig.get_paths()["stdlib"]


@dataclass
class TracedHub(HubProcess):
    """A hub process started with tracemalloc on (or plain, to measure RSS as served)."""

    traced: bool = True

    def command(self) -> list[str]:
        if not self.traced:
            return super().command()
        return [sys.executable, "-c", _TRACED, "serve", "--port", str(self.port)]

    def snapshot(self, number: int) -> tracemalloc.Snapshot:
        path = Path(self.env["HUB_VAR_DIR"]) / f"snap-{number}"
        assert self.process is not None  # noqa: S101
        self.process.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + 120
        while not path.exists() or time.time() - path.stat().st_mtime < 1.0:  # written whole
            if time.monotonic() > deadline:
                raise TimeoutError(f"no snapshot from the hub ({self.log})")
            time.sleep(0.2)
        return tracemalloc.Snapshot.load(str(path))


async def hold(hub: HubProcess, tokens: list[str], opened: list[int], stop: asyncio.Event) -> None:
    """One quiet device per token, each connected until `stop` (handshakes that time out are retried)."""

    async def one(token: str) -> None:
        while True:
            try:
                async with DeviceClient.connect(hub.ws, token, open_timeout=60, ping_interval=None, max_queue=4):
                    opened[0] += 1
                    await stop.wait()
                    return
            except (OSError, TimeoutError, websockets.WebSocketException):
                await asyncio.sleep(1)

    tasks = []
    for i, token in enumerate(tokens, 1):
        tasks.append(asyncio.create_task(one(token)))
        if i % 200 == 0:
            await asyncio.sleep(0.2)
    await stop.wait()
    await asyncio.gather(*tasks, return_exceptions=True)


async def sockets_open(hub: HubProcess, tokens: list[str], stop: asyncio.Event) -> asyncio.Task[None]:
    opened = [0]
    task = asyncio.create_task(hold(hub, tokens, opened, stop))
    with progress() as bar:
        shown = bar.add_task("connecting", total=len(tokens), status="")
        while opened[0] < len(tokens):
            await asyncio.sleep(0.5)
            bar.update(shown, completed=opened[0])
    await asyncio.sleep(3)  # handshakes' leftovers settle
    return task


async def measured_rss(env: dict[str, str], tokens: list[str]) -> float:
    """KiB of RSS per socket of a hub served as usual (no tracemalloc)."""
    hub = hub_start(TracedHub(env, traced=False))
    try:
        stop = asyncio.Event()
        warm = await sockets_open(hub, tokens[:1], stop)
        before = rss_kib(hub.process.pid)  # type: ignore[union-attr]
        held = await sockets_open(hub, tokens[1:], stop)
        after = rss_kib(hub.process.pid)  # type: ignore[union-attr]
        stop.set()
        await asyncio.gather(warm, held)
        return (after - before) / (len(tokens) - 1)
    finally:
        hub.stop()


def owner(trace: tracemalloc.Traceback) -> str:
    """The innermost frame outside the standard library: the code that asked for the memory."""
    for frame in reversed(trace):  # most recent call first
        if not frame.filename.startswith(STDLIB) or "site-packages" in frame.filename:
            name = frame.filename.split("site-packages/")[-1].removeprefix(str(ROOT) + "/")
            return f"{name}:{frame.lineno}"
    return f"{trace[0].filename.removeprefix(STDLIB + '/')}:{trace[0].lineno}"


async def run(args: argparse.Namespace) -> None:
    with bench_database("sockmem", redis_url=args.redis_url, BENCH_TRACE_FRAMES=str(args.frames)) as env:
        tokens = [d.token for d in devices_copy(env["HUB_DATABASE_URL"], args.devices + 1, prefix="m")]
        rss = await measured_rss(env, tokens)
        console.print(f"RSS per idle socket, hub served as usual: {rss:.1f} KiB")
        hub = hub_start(TracedHub(env))
        try:
            stop = asyncio.Event()
            warm = await sockets_open(hub, tokens[:1], stop)
            before = await asyncio.to_thread(hub.snapshot, 1)
            held = await sockets_open(hub, tokens[1:], stop)
            after = await asyncio.to_thread(hub.snapshot, 2)
            stop.set()
            await asyncio.gather(warm, held)
        finally:
            hub.stop()
    n = args.devices
    diff = after.compare_to(before, "traceback")
    total = sum(d.size_diff for d in diff)
    by_owner: dict[str, list[int]] = {}
    for d in diff:
        entry = by_owner.setdefault(owner(d.traceback), [0, 0])
        entry[0] += d.size_diff
        entry[1] += d.count_diff
    rows = [
        [where, f"{size / n:,.0f}", f"{count / n:.1f}"]
        for where, (size, count) in sorted(by_owner.items(), key=lambda kv: -kv[1][0])[: args.top]
    ]
    title = (
        f"Python memory per idle device socket ({n:,} sockets): {total / n / 1024:.1f} KiB traced, {rss:.1f} KiB RSS"
    )
    table(title, ["allocated at (first frame outside the standard library)", "bytes", "blocks"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--frames", type=int, default=12, help="traceback depth kept by tracemalloc")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
