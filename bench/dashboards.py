"""Dashboard fan-out under ingest: V logged-in viewers follow D devices that send R readings/s in total.

Each reading carries its send time (wall clock, seconds) as its value, so every viewer measures
device -> hub -> commit -> channel layer -> browser socket latency for every reading it receives. One run
prints every scenario beside its no-viewer reference (the same rate, no viewers: the devices' send->ack p99
that viewers must not raise), per-viewer completeness against the database (missing and duplicate
readings), and the CPU of the hubs and of the viewers; then a sweep of viewers upward at one rate until the
p99 passes 250 ms (the fan-out's capacity), a check with headless Chromium pages, and the memory of idle
streams. Loopback only.

    .venv/bin/python bench/dashboards.py                                  # the issue's scenarios, split roles
    .venv/bin/python bench/dashboards.py --scenarios 100@1000 --no-sweep --no-idle --browsers 0
    .venv/bin/python bench/dashboards.py --topology one                   # one `serve` process does all
    .venv/bin/python bench/dashboards.py --baseline f1f12d6 --no-sweep    # and that revision's code, one process

Topologies: `split` (default) runs two hub processes on this 2-core machine, `serve --role ingest` for the
devices and `serve --role stream` for the viewers, as docs/deployment.md routes them; `one` runs a single
`serve` (the old code's only shape, so --baseline uses it).

The viewers run in processes of their own (`--viewer-processes`) at the stream process's priority, on
websockets' sans-I/O protocol, stamping each frame as it arrives and parsing after the run: the client
shares the machine's two cores with the hub, and its own delays would otherwise count as the hub's. The
devices stay in this process, at normal priority, so their acks are timed by a loop that does nothing else.
"""

import argparse
import asyncio
import contextlib
import gc
import multiprocessing
import os
import subprocess
import sys
import time
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path

import httpx
import orjson
import psycopg
import websockets
from harness import (
    ROOT,
    HubProcess,
    baseline_tree,
    bench_database,
    cpu_seconds,
    devices_copy,
    hub_start,
    p50_p99,
    progress,
    rss_kib,
    table,
)
from websockets.asyncio.client import ClientConnection
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.uri import parse_uri

from clients.device import DeviceClient, Handled
from clients.viewer import ProtocolViolation, StreamOpening, ViewerClient, WebsocketsSocket, stream_url, viewer_headers
from core.collector import GC_THRESHOLDS
from core.epoch import now_ms

OPERATOR, PASSWORD = "bench-operator", "bench-operator-password"
P99_LIMIT_MS = 250.0


@dataclass
class Viewer:
    """One socket viewer: what arrived and when, parsed only after the run (so the client's own work while it
    runs is the least it can be: a busy client would count its own delays as the hub's latency)."""

    device: str
    arrivals: list[tuple[float, bytes | str]] = field(default_factory=list)
    closed: int | None = None

    def readings(self) -> tuple[int, list[int], list[float]]:
        """How many `readings` messages came, the `ts` of every reading delivered (duplicates included) and
        each one's latency in seconds."""
        messages, received, latencies = 0, [], []
        for arrived, raw in self.arrivals:
            message = orjson.loads(raw)
            if message["type"] == "readings":
                messages += 1
                received.extend([r[0] for r in message["readings"]])
                latencies.extend([arrived - r[2] for r in message["readings"]])
        return messages, received, latencies


@dataclass
class Topology:
    """Where devices send (ingest) and where viewers connect (stream): one process, or one of each role."""

    ingest: HubProcess
    stream: HubProcess
    code: str = "this tree"

    @property
    def processes(self) -> list[HubProcess]:
        return [self.ingest] if self.ingest is self.stream else [self.ingest, self.stream]

    @property
    def pids(self) -> list[int]:
        return [hub.process.pid for hub in self.processes]

    @property
    def shape(self) -> str:
        return "1 process (all)" if self.ingest is self.stream else "2 processes (ingest + stream)"


@contextlib.contextmanager
def topology(env: dict[str, str], shape: str, root: Path = ROOT, code: str = "this tree") -> Iterator[Topology]:
    if shape == "one":
        hubs = [HubProcess(env, root=root)]
    else:
        hubs = [HubProcess({**env, "HUB_ROLE": "ingest"}, root=root), HubProcess({**env, "HUB_ROLE": "stream"})]
    try:
        for hub in hubs:
            hub_start(hub)
        yield Topology(hubs[0], hubs[-1], code)
    finally:
        for hub in hubs:
            hub.stop()


def operator_create(env: dict[str, str], root: Path = ROOT) -> None:
    command = [sys.executable, "manage.py", "createsuperuser", "--noinput", "--username", OPERATOR, "--email", ""]
    subprocess.run(command, cwd=root, env={**env, "DJANGO_SUPERUSER_PASSWORD": PASSWORD}, check=True)


async def session_cookie(http: str) -> str:
    """Log in through the real login form (CSRF included); the Cookie header for the streams."""
    async with httpx.AsyncClient(base_url=http) as client:
        await client.get("/login/")
        form = {"username": OPERATOR, "password": PASSWORD, "csrfmiddlewaretoken": client.cookies["csrftoken"]}
        answer = await client.post("/login/", data=form, headers={"Referer": f"{http}/login/"})
        if answer.status_code != 302:
            raise SystemExit(f"login failed: {answer.status_code}")
        return "; ".join(f"{k}={v}" for k, v in client.cookies.items())


class SocketViewer(asyncio.Protocol):
    """One viewer's socket on websockets' sans-I/O protocol: each frame is stamped and kept as it arrives, with
    no task, future or queue per message (the client's cost is the bench's noise; it shares the machine)."""

    def __init__(self, viewer: Viewer, url: str, headers: dict[str, str], delivered: Synchronized) -> None:
        self.viewer = viewer
        self.delivered = delivered
        self.protocol = ClientProtocol(parse_uri(url), max_size=None)
        self.request = self.protocol.connect()
        self.request.headers.update(headers)
        self.transport: asyncio.Transport | None = None
        self.changed = asyncio.Event()  # frames arrived or the socket closed (waited on while subscribing)
        self.gone = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.protocol.send_request(self.request)
        self.flush()

    def data_received(self, data: bytes) -> None:
        arrived = time.time()
        self.protocol.receive_data(data)
        for event in self.protocol.events_received():
            if isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                self.viewer.arrivals.append((arrived, bytes(event.data)))
                self.delivered.value += 1
        self.changed.set()
        self.flush()  # pongs, the answer to a close

    def connection_lost(self, exc: Exception | None) -> None:
        code = self.protocol.close_code
        if code != 1000:  # the hub closed it (4008: too slow), not the bench
            self.viewer.closed = code
        self.changed.set()
        if not self.gone.done():
            self.gone.set_result(None)

    def flush(self) -> None:
        for chunk in self.protocol.data_to_send():
            if chunk:
                self.transport.write(chunk)
            elif self.transport.can_write_eof():
                self.transport.write_eof()

    def send(self, text: str) -> None:
        self.protocol.send_text(text.encode())
        self.flush()

    async def message(self, n: int) -> dict:
        """The viewer's n-th message (from 1), waiting for it while subscribing."""
        async with asyncio.timeout(30):
            while len(self.viewer.arrivals) < n:
                if self.gone.done():
                    raise ConnectionError(f"closed while subscribing: {self.protocol.handshake_exc!r}")
                self.changed.clear()
                await self.changed.wait()
        return orjson.loads(self.viewer.arrivals[n - 1][1])

    async def close(self) -> None:
        if not self.gone.done():
            self.protocol.send_close(1000)
            self.flush()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.gone), 5)
        self.transport.close()


async def subscribed(hub: tuple[str, str], cookie: str, viewer: Viewer, delivered: Synchronized) -> SocketViewer:
    """A viewer's stream through the opening of the protocol (clients/viewer.py: subscribed, since, history)."""
    hub_ws, origin = hub
    url = stream_url(hub_ws, viewer.device)
    host, port = hub_ws.removeprefix("ws://").split(":")
    headers = viewer_headers(hub_ws, cookie, origin)
    loop = asyncio.get_running_loop()
    _, socket = await loop.create_connection(lambda: SocketViewer(viewer, url, headers, delivered), host, int(port))
    opening = StreamOpening(device=True)
    opening.take(await socket.message(1))
    socket.send(StreamOpening.since(now_ms()))
    opening.take(await socket.message(2))
    if opening.history is None:
        raise ProtocolViolation("no history after since")
    return socket


async def plain_subscribed(hub: tuple[str, str], cookie: str, viewer: Viewer) -> ClientConnection:
    """The same opening on a plain websockets asyncio connection, as anyone's script would open it (its
    defaults: permessage-deflate offered, pings every 20 s, UTF-8 decoded into `str`)."""
    hub_ws, origin = hub
    headers = viewer_headers(hub_ws, cookie, origin)
    ws = await websockets.connect(stream_url(hub_ws, viewer.device), additional_headers=headers, max_size=None)
    opening = StreamOpening(device=True)
    opening.take(orjson.loads(await ws.recv()))
    await ws.send(StreamOpening.since(now_ms()))
    opening.take(orjson.loads(await ws.recv()))
    if opening.history is None:
        raise ProtocolViolation("no history after since")
    return ws


async def plain_follow(ws: ClientConnection, viewer: Viewer, delivered: Synchronized) -> None:
    """A task per viewer that stamps each message as `recv` hands it over."""
    with contextlib.suppress(websockets.ConnectionClosed):
        async for raw in ws:
            viewer.arrivals.append((time.time(), raw))
            delivered.value += 1
    if ws.close_code not in (None, 1000):
        viewer.closed = ws.close_code


@dataclass
class Tally:
    """What one viewer process measured, summed over its viewers (latencies in ms, after the warm-up)."""

    latencies: bytes = b""  # array("f")
    messages: int = 0
    delivered: int = 0
    missing: int = 0
    duplicates: int = 0
    closed: int = 0


@dataclass(frozen=True)
class ViewerShare:
    """One viewer process's part of a scenario (picklable: it is handed to a spawned process)."""

    stream: tuple[str, str]  # the stream process's ws:// address and its http:// one (the Origin)
    cookie: str
    keys: list[str]  # the device each of its viewers follows
    url: str  # the database each viewer is checked against
    seconds: float
    client: str = "lean"  # "lean": SocketViewer; "plain": websockets' asyncio client, a task per viewer


def viewer_process(conn: Connection, share: ViewerShare, nice: int, delivered: Synchronized) -> None:
    """A process of viewers (the bench's own client must not share a core, or a GIL, with the devices it
    times): it subscribes them, says "ready", streams until told "stop", then checks each against the database."""
    os.nice(nice)
    asyncio.run(viewers_run(conn, share, delivered))


async def viewers_run(conn: Connection, share: ViewerShare, delivered: Synchronized) -> None:
    loop = asyncio.get_running_loop()
    watching = [Viewer(key) for key in share.keys]
    try:
        sockets, followers = [], []
        for i in range(0, len(watching), 50):  # 50 handshakes at a time: the hub's login check is a DB query each
            batch = watching[i : i + 50]
            if share.client == "plain":
                opened = await asyncio.gather(*(plain_subscribed(share.stream, share.cookie, v) for v in batch))
                for ws, v in zip(opened, batch, strict=True):
                    followers.append(asyncio.create_task(plain_follow(ws, v, delivered)))
                sockets += opened
            else:
                sockets += await asyncio.gather(*(subscribed(share.stream, share.cookie, v, delivered) for v in batch))
    except Exception as exc:  # noqa: BLE001 - reported to the bench, which stops
        conn.send(("failed", repr(exc)))
        return
    # The client's own pauses must not count as the hub's latency: the connections' objects are left out of
    # the collector's full passes (as the hub does for its start-up heap), and young passes are rarer.
    if share.client == "lean":  # a plain client is left as anyone's script would be
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
    conn.send(("ready", len(sockets)))
    since = await loop.run_in_executor(None, conn.recv)
    await asyncio.gather(*(socket.close() for socket in sockets), return_exceptions=True)
    await asyncio.gather(*followers)
    stored = await loop.run_in_executor(None, stored_since, share.url, since)
    tally, latencies = Tally(), array("f")
    for v in watching:
        messages, arrived, waited = v.readings()
        received = set(arrived)
        tally.messages += messages
        tally.delivered += len(arrived)
        tally.missing += len(stored.get(v.device, set()) - received)
        tally.duplicates += len(arrived) - len(received)
        tally.closed += v.closed is not None
        # Latency after a warm-up second, so connection set-up does not count.
        latencies.extend([s * 1000 for s in waited[int(len(waited) / share.seconds) :]])
    tally.latencies = latencies.tobytes()
    conn.send(tally)


async def device(
    hub: HubProcess, token: str, rate: float, batch: int, sent: list[int], acks: list[float], stop: asyncio.Event
) -> None:
    """`rate` readings/s in frames of `batch`, on an absolute schedule; acks are timed, not awaited."""

    def handled(frame: Handled) -> None:
        acks.append(frame.latency)  # each frame's send→ack time (the commit part of the latency)

    async with DeviceClient.connect(hub.ws, token, on_handled=handled, max_queue=None) as client:
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


def stored_since(url: str, since: int) -> dict[str, set[int]]:
    query = (
        "SELECT d.key, (extract(epoch FROM r.ts) * 1000)::bigint FROM ingest_reading r"
        " JOIN devices_device d ON d.id = r.device_id WHERE r.ts >= to_timestamp(%s / 1000.0)"
    )
    stored: dict[str, set[int]] = {}
    with psycopg.connect(url) as conn:
        for key, ts in conn.execute(query, [since]):
            stored.setdefault(key, set()).add(ts)
    return stored


@dataclass
class Result:
    code: str
    shape: str
    viewers: int
    rate: float
    seconds: float
    sent: int = 0
    stored: int = 0
    p50: float = 0.0
    p99: float = 0.0
    ack_p99: float = 0.0
    messages_per_s: float = 0.0
    delivered_per_s: float = 0.0
    missing: int = 0
    duplicates: int = 0
    closed: int = 0
    cpu: float = 0.0
    client_cpu: float = 0.0

    @property
    def complete(self) -> bool:
        return self.missing == self.duplicates == self.closed == 0 and self.sent == self.stored


class ViewerProcesses:
    """The viewers of one scenario, spread over `args.viewer_processes` processes at the stream process's
    priority (`args.viewer_nice`)."""

    def __init__(self, top: Topology, url: str, cookie: str, keys: list[str], args) -> None:
        spawn = multiprocessing.get_context("spawn")
        self.delivered = [spawn.Value("q", 0, lock=False) for _ in range(args.viewer_processes)]
        self.pipes, self.processes = [], []
        for i, delivered in enumerate(self.delivered):
            ours, theirs = spawn.Pipe()
            stream = (top.stream.ws, top.stream.http)
            share = ViewerShare(stream, cookie, keys[i :: args.viewer_processes], url, args.seconds, args.client)
            process = spawn.Process(
                target=viewer_process, args=(theirs, share, args.viewer_nice, delivered), daemon=True
            )
            process.start()
            self.pipes.append(ours)
            self.processes.append(process)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    async def ready(self) -> None:
        loop = asyncio.get_running_loop()
        for pipe in self.pipes:
            state, detail = await loop.run_in_executor(None, pipe.recv)
            if state != "ready":
                raise SystemExit(f"viewers failed to subscribe: {detail}")

    async def stop(self, since: int) -> list[Tally]:
        loop = asyncio.get_running_loop()
        for pipe in self.pipes:
            pipe.send(since)
        tallies = [await loop.run_in_executor(None, pipe.recv) for pipe in self.pipes]
        for process in self.processes:
            process.join(10)
        return tallies


async def scenario(top: Topology, url: str, devices: list, cookie: str, viewers: int, rate: float, args) -> Result:
    """V viewers spread over the devices, the devices sending `rate` readings/s for `args.seconds`."""
    result = Result(top.code, top.shape, viewers, rate, args.seconds)
    keys = [devices[i % len(devices)].key for i in range(viewers)]
    stop_devices = asyncio.Event()
    sent, acks = [0], []
    label = f"{top.code}, {viewers:,} viewers @ {rate:,.0f}/s"
    with progress() as bar:
        bar.add_task(f"{label}: subscribing", total=None, status="")
        watching = ViewerProcesses(top, url, cookie, keys, args) if viewers else None
        if watching:
            await watching.ready()
        since = now_ms()
        measured = top.pids + (watching.pids if watching else [])
        started, cpu_before = time.monotonic(), [cpu_seconds([pid]) for pid in measured]
        senders = [
            asyncio.create_task(device(top.ingest, d.token, rate / len(devices), args.batch, sent, acks, stop_devices))
            for d in devices
        ]
        task = bar.add_task(f"{label}: streaming", total=args.seconds, status="")
        while (elapsed := time.monotonic() - started) < args.seconds:
            delivered = sum(d.value for d in watching.delivered) if watching else 0
            bar.update(task, completed=elapsed, status=f"sent {sent[0]:,}, stream messages {delivered:,}")
            await asyncio.sleep(0.25)
        stop_devices.set()
        await asyncio.gather(*senders)
        duration = time.monotonic() - started
        cpu = [(cpu_seconds([pid]) - before) / duration for pid, before in zip(measured, cpu_before, strict=True)]
        result.cpu, result.client_cpu = sum(cpu[: len(top.pids)]), sum(cpu[len(top.pids) :])
        await asyncio.sleep(1.0)
        tallies = await watching.stop(since) if watching else []
    stored = stored_since(url, since)
    result.sent, result.stored = sent[0], sum(map(len, stored.values()))
    result.missing = sum(t.missing for t in tallies)
    result.duplicates = sum(t.duplicates for t in tallies)
    result.closed = sum(t.closed for t in tallies)
    latencies = array("f")
    for t in tallies:
        latencies.frombytes(t.latencies)
    result.p50, result.p99 = p50_p99(latencies) if latencies else (0.0, 0.0)
    result.ack_p99 = p50_p99(acks)[1] * 1000
    result.messages_per_s = sum(t.messages for t in tallies) / duration
    result.delivered_per_s = sum(t.delivered for t in tallies) / duration
    return result


def result_row(r: Result, reference: Result | None) -> list[str]:
    ratio = f" ({r.ack_p99 / reference.ack_p99:.2f}×)" if reference and reference.ack_p99 else ""
    return [
        r.code,
        r.shape,
        f"{r.viewers:,}",
        f"{r.rate:,.0f}",
        f"{r.p50:.1f} / {r.p99:.1f}" if r.viewers else "–",
        f"{r.ack_p99:.1f}{ratio}",
        f"{r.messages_per_s:,.0f}",
        f"{r.delivered_per_s:,.0f}",
        f"{r.sent:,} / {r.stored:,}",
        f"{r.missing:,} / {r.duplicates:,} / {r.closed}",
        f"{r.cpu:.2f}",
        f"{r.client_cpu:.2f}",
    ]


COLUMNS = [
    "code",
    "hub",
    "viewers",
    "readings/s",
    "device→viewer p50 / p99 ms",
    "send→ack p99 ms (÷ no viewers)",
    "stream msgs/s",
    "readings delivered/s",
    "sent / stored",
    "missing / dup / closed",
    "hub cores",
    "viewer-process cores",
]


async def idle_memory(top: Topology, cookie: str, devices: list, count: int, fleet: bool) -> float:
    """KiB of the stream process's RSS per open, idle stream (`count` device streams, or fleet streams), after 20
    first ones (the first connections load code and caches once)."""
    hub = top.stream
    sockets = []

    async def opened(n: int) -> None:
        for _ in range(n):
            key = None if fleet else devices[len(sockets) % len(devices)].key
            headers = viewer_headers(hub.ws, cookie)
            ws = await websockets.connect(stream_url(hub.ws, key), additional_headers=headers, max_size=None)
            sockets.append(ws)
            await ViewerClient.opened(WebsocketsSocket(ws), device=not fleet)  # subscribed

    try:
        await opened(20)
        before = rss_kib(hub.process.pid)
        await opened(count)
        await asyncio.sleep(2.0)  # let the process settle (the figure is a snapshot, not a wait)
        return (rss_kib(hub.process.pid) - before) / count
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)


# Each page's newest drawn x and its connection states, read from the page itself.
PAGE_STATE = """() => {
    const chart = document.querySelector(".chart");
    const xs = chart && chart.data ? chart.data[0].x : [];
    return {newest: xs.length ? new Date(xs[xs.length - 1]).getTime() : 0, states: window.benchStates || []};
}"""
RECORD_STATES = """
window.benchStates = [];
new MutationObserver(() => {
  const el = document.getElementById("connection");
  const state = el && el.textContent;
  if (state && window.benchStates[window.benchStates.length - 1] !== state) window.benchStates.push(state);
}).observe(document, {subtree: true, childList: true, characterData: true});
"""


async def browser_check(
    top: Topology, url: str, cookie: str, devices: list, pages: int, viewers: int, rate: float, args
) -> list:
    """`pages` headless Chromium pages on one device's page while it sends `rate` readings/s and `viewers`
    socket viewers load the stream process: every page's chart must advance, none may be closed (4008)."""
    from playwright.async_api import async_playwright

    chromium = os.environ.get("HUB_TEST_CHROMIUM", "/usr/bin/chromium")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
    flags += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
    one = devices[:1]
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=flags)
        context = await browser.new_context()
        await context.add_cookies(
            [{"name": k, "value": v, "url": top.stream.http} for k, v in (c.split("=", 1) for c in cookie.split("; "))]
        )
        await context.add_init_script(RECORD_STATES)
        tabs = [await context.new_page() for _ in range(pages)]
        for tab in tabs:
            await tab.goto(f"{top.stream.http}/devices/{one[0].key}/")
        load = asyncio.create_task(scenario(top, url, one, cookie, viewers, rate, args))
        samples = []
        while not load.done():  # each page's newest drawn reading, every second, while the load runs
            samples.append([await tab.evaluate(PAGE_STATE) for tab in tabs])
            await asyncio.wait({load}, timeout=1.0)
        result = load.result()
        await browser.close()
    drawing = [s for s in samples if all(page["newest"] for page in s)] or samples
    middle, last = drawing[len(drawing) // 2], drawing[-1]
    advanced = sum(b["newest"] > a["newest"] for a, b in zip(middle, last, strict=True))
    closed = sum(any("too slow" in s or "closed" in s for s in b["states"]) for b in last)
    return [
        f"{pages} Chromium pages + {viewers:,} socket viewers, 1 device @ {rate:,.0f}/s",
        f"{advanced} of {pages}",
        str(closed),
        f"{result.p50:.1f} / {result.p99:.1f}",
    ]


async def run_code(args, env: dict[str, str], root: Path, code: str, shape: str) -> tuple[list, list, list, list]:
    url = env["HUB_DATABASE_URL"]
    devices = devices_copy(url, args.devices, prefix="dash")
    operator_create(env, root)
    rows, curve, idle, browsers = [], [], [], []
    if args.idle:  # first, each on fresh processes: a heap that served other sockets reuses their memory
        with topology(env, shape, root, code) as top:
            cookie = await session_cookie(top.stream.http)
            per_device = await idle_memory(top, cookie, devices, args.idle, fleet=False)
            idle.append([code, f"{args.idle:,} device streams", f"{per_device:.1f} KiB"])
        fleet = devices_copy(url, args.fleet_devices, prefix="fleet")
        with topology(env, shape, root, code) as top:
            cookie = await session_cookie(top.stream.http)
            per_fleet = await idle_memory(top, cookie, fleet, args.idle_fleet, fleet=True)
            total = args.fleet_devices + args.devices
            idle.append([code, f"{args.idle_fleet:,} fleet streams ({total:,} devices)", f"{per_fleet:.1f} KiB"])
    with topology(env, shape, root, code) as top:
        cookie = await session_cookie(top.stream.http)
        references: dict[float, Result] = {}
        for viewers, rate in args.scenarios:
            if rate not in references:
                references[rate] = await scenario(top, url, devices, cookie, 0, rate, args)
                rows.append(result_row(references[rate], None))
            rows.append(result_row(await scenario(top, url, devices, cookie, viewers, rate, args), references[rate]))
        if args.sweep:
            reference = references.get(args.sweep_rate) or await scenario(
                top, url, devices, cookie, 0, args.sweep_rate, args
            )
            for viewers in args.sweep:
                r = await scenario(top, url, devices, cookie, viewers, args.sweep_rate, args)
                curve.append(result_row(r, reference) + ["yes" if r.p99 <= P99_LIMIT_MS and r.complete else "NO"])
                if r.p99 > P99_LIMIT_MS or not r.complete:
                    break
        if args.browsers:
            browsers.append(
                await browser_check(top, url, cookie, devices, args.browsers, args.browser_viewers, 1000.0, args)
            )
    return rows, curve, idle, browsers


def scenario_list(text: str) -> list[tuple[int, float]]:
    pairs = []
    for item in text.split(","):
        viewers, rate = item.split("@")
        pairs.append((int(viewers), float(rate)))
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=10)
    parser.add_argument("--scenarios", type=scenario_list, default="1000@2000,2000@1000", help="VIEWERS@RATE,...")
    parser.add_argument("--batch", type=int, default=1, help="readings per device frame")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--topology", choices=["split", "one"], default="split")
    parser.add_argument("--sweep", type=lambda t: [int(v) for v in t.split(",")], default="500,1000,2000,3000,4000")
    parser.add_argument("--sweep-rate", type=float, default=1000.0)
    parser.add_argument("--no-sweep", dest="sweep", action="store_const", const=[])
    # Thousands, not hundreds: a snapshot of RSS also holds young garbage the collector has not reached yet
    # (up to its 50,000-object threshold, core/collector.py), a few MiB whatever the number of sockets.
    parser.add_argument("--idle", type=int, default=3000, help="idle device streams to weigh (0: none)")
    parser.add_argument("--idle-fleet", type=int, default=1000, help="idle fleet streams to weigh")
    parser.add_argument("--fleet-devices", type=int, default=10_000, help="devices registered for the fleet streams")
    parser.add_argument("--no-idle", dest="idle", action="store_const", const=0)
    parser.add_argument("--browsers", type=int, default=20, help="headless Chromium pages on one device (0: none)")
    parser.add_argument("--browser-viewers", type=int, default=500, help="socket viewers beside the pages")
    parser.add_argument("--baseline", metavar="REV", help="also run the scenarios on this revision (one process)")
    parser.add_argument("--viewer-processes", type=int, default=2, help="processes the socket viewers run in")
    parser.add_argument("--viewer-nice", type=int, default=5, help="their CPU priority (as HUB_STREAM_NICE)")
    parser.add_argument(
        "--client",
        choices=["lean", "plain"],
        default="lean",
        help="lean: the bench's sans-I/O sockets; plain: websockets' asyncio client, one process at nice 0",
    )
    parser.add_argument(
        "--hub-env", action="append", default=[], metavar="NAME=VALUE", help="a setting for the hub processes"
    )
    parser.add_argument("--redis", default=os.environ.get("HUB_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = parser.parse_args()
    if args.client == "plain":  # as the issue measured: anyone's client, one process, the machine's priority
        args.viewer_processes, args.viewer_nice = 1, 0
    settings = dict(item.split("=", 1) for item in args.hub_env)
    with bench_database("dashboards", redis_url=args.redis, **settings) as env:
        rows, curve, idle, browsers = asyncio.run(run_code(args, env, ROOT, "this tree", args.topology))
        if args.baseline:
            with baseline_tree(args.baseline, env, args.redis) as (root, base_env):
                base_args = argparse.Namespace(**{**vars(args), "sweep": [], "idle": 0, "browsers": 0})
                rows += asyncio.run(run_code(base_args, base_env, root, args.baseline, "one"))[0]
    title = f"dashboards: {args.devices} devices, frames of {args.batch}, {args.seconds:g} s per scenario"
    table(title, COLUMNS, rows)
    if curve:
        table(
            f"fan-out capacity at {args.sweep_rate:,.0f} readings/s (p99 ≤ {P99_LIMIT_MS:g} ms)",
            [*COLUMNS, "ok"],
            curve,
        )
    if browsers:
        table(
            "browser check",
            ["load", "pages whose chart advanced", "pages closed", "socket viewers p50 / p99 ms"],
            browsers,
        )
    if idle:
        table("idle streams: stream process RSS per socket", ["code", "streams", "RSS per socket"], idle)


if __name__ == "__main__":
    main()
