"""Commands (server-side RPC, issue 24): the two-way round trip over each device transport while the operator's
rate climbs, and 10,000 persistent commands queued for offline devices, then delivered when they all connect.

    .venv/bin/python bench/commands.py                      # 1,000 devices per transport, 10…800 commands/s, 4 s each
    .venv/bin/python bench/commands.py --transports ws --rates 100,200,300 --seconds 10
    .venv/bin/python bench/commands.py --devices 200 --offline-commands 2000 --transports none

One hub process (`manage.py serve`, PostgreSQL + Redis) on a scratch database. Per transport, --devices devices
(1,000) are connected at once by a fleet process of their own: WebSocket sockets (`{"rpc": …}` answered with
`{"$rpc": {"id", "response"}}`), ThingsBoard HTTP long-pollers (`GET /api/v1/<TOKEN>/rpc?timeout=30000`, the
answer POSTed to `…/rpc/<ID>`, then the next poll on the same keep-alive connection), or MQTT clients through a
private Mosquitto and one `manage.py mqtt_bridge` worker (each device subscribes `devices/<KEY>/rpc/request/+`,
publishes one telemetry message so the worker has heard from it, answers on `…/rpc/response/<ID>`). The MQTT
devices are paho clients driven by the fleet's one asyncio loop (`loop_read`/`loop_write` on socket readiness,
`loop_misc` each second), not 1,000 `loop_start` threads. The HTTP sides (the operator and the pollers) use a
minimal keep-alive HTTP/1.1 client: httpx's cost per request on this 2-core machine would be counted as the hub's.

Once the fleet is connected, single commands go one at a time until three in a row are answered within 250 ms (the
hub first works through a thousand connects; printed as "answered within 250 ms N s later"). Then the operator
(this process) POSTs `/api/v1/devices/<KEY>/rpc {method, params, timeout}` to random devices at each rate of
--rates for --seconds (open loop: on schedule, whatever is still in flight) and times POST → 200. A rate
breaks when p99 > 1 s, or any answer is not 200 (504: no answer within the command's timeout; 5xx; a refused
connection), or a device saw an error frame, a refused answer or a lost connection; the sweep of a transport stops
at the first rate that breaks and prints it. CPU (in cores) of the hub, the bridge, the database sessions, the
fleet, the operator and the whole machine, and the hub's peak RSS, per rate.

Then --offline-commands persistent commands (10,000) for --devices devices that are away (as many each) are
queued through the API as fast as --queue-concurrency connections allow (timed: commands/s), and all the devices
connect over WebSocket at once and answer each. Counted: commands delivered, delivered again to a device that had
already answered them (at-least-once must not do this to a connected device), lost (queued, never delivered), and
the time until the database holds every one `successful`. Loopback only.
"""

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psycopg
from harness import (
    bench_database,
    bridge_running,
    console,
    cpu_seconds,
    database_backend_pids,
    devices_copy,
    hubs_running,
    machine_busy_seconds,
    mosquitto_running,
    operator_token,
    p50_p99,
    rss_kib,
    table,
)

from core.epoch import now_ms

GOAL_P99 = 1.0  # seconds, operator POST → 200
MAX_IN_FLIGHT = 3000  # operator requests open at once; past it a command is not sent (and the rate breaks)
POLL_MS = 30_000  # the long-pollers' wait
SETTLED = 0.25  # s: a sweep starts once single commands are answered this fast
KEEP_ALIVE_SECONDS = 2.0  # an operator connection idle longer is not used again (uvicorn closes them after 5 s)


# A minimal HTTP/1.1 client ------------------------------------------------------------------------------


class HttpConnection:
    """One keep-alive HTTP/1.1 connection to 127.0.0.1:`port`, one request at a time."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, target: str, body: bytes = b"", headers: tuple[str, ...] = ()
    ) -> tuple[int, bytes]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self._reader is not None  # opened with the writer
        head = "\r\n".join([f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}", *headers])
        try:
            self._writer.write(head.encode() + b"\r\n\r\n" + body)
            lines = (await self._reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            fields = {k.strip().lower(): v.strip().lower() for k, _, v in (line.partition(":") for line in lines[1:])}
            if "content-length" in fields:
                content = await self._reader.readexactly(int(fields["content-length"]))
            elif fields.get("transfer-encoding") == "chunked":
                content = await self._chunked(self._reader)
            else:
                content = await self._reader.read()  # until the server closes
                fields["connection"] = "close"
        except BaseException:
            self.close()
            raise
        if fields.get("connection") == "close":
            self.close()
        return status, content

    @staticmethod
    async def _chunked(reader: asyncio.StreamReader) -> bytes:
        parts = []
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            parts.append((await reader.readexactly(size + 2))[:-2])
        await reader.readuntil(b"\r\n")  # no trailers
        return b"".join(parts)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


class Operator:
    """The operator API's client: a pool of keep-alive connections (one per request in flight) and a token."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.headers = (f"Authorization: Bearer {token}", "Content-Type: application/json")
        self.in_flight = 0
        self._idle: list[tuple[float, HttpConnection]] = []  # (idle since, connection), the freshest last

    async def post(self, target: str, document: object, timeout: float) -> tuple[int, Any]:
        """(status, JSON body); status 0 when the connection failed or no answer came within `timeout` seconds."""
        connection = self._connection()
        self.in_flight += 1
        try:
            async with asyncio.timeout(timeout):
                status, body = await connection.request("POST", target, orjson.dumps(document), self.headers)
        except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError):
            connection.close()
            return 0, None
        finally:
            self.in_flight -= 1
        self._idle.append((time.monotonic(), connection))
        return status, orjson.loads(body) if body else None

    def _connection(self) -> HttpConnection:
        # uvicorn closes a connection idle for 5 s (timeout_keep_alive): a request written to it would be lost.
        while self._idle and time.monotonic() - self._idle[0][0] > KEEP_ALIVE_SECONDS:
            self._idle.pop(0)[1].close()
        return self._idle.pop()[1] if self._idle else HttpConnection(self.port)


# The device fleet (a process of its own) ----------------------------------------------------------------


@dataclass
class Tally:
    """What the fleet's devices saw."""

    connected: int = 0
    received: int = 0  # command messages, repeats included
    repeats: int = 0  # an id received again before its device answered it
    after_answer: int = 0  # an id received again after its device had answered it
    answered: int = 0
    errors: int = 0  # error frames, answers the hub refused, polls answered other than 200/408
    drops: int = 0  # connections lost or refused (then opened again)
    ids: list[int] = field(default_factory=list)  # every command id received, in order

    def command(self, command_id: int, seen: set[int], answered: set[int]) -> bool:
        """Count one command message; whether to answer it (a device drops a repeat by id)."""
        self.received += 1
        self.ids.append(command_id)
        if command_id in answered:
            self.after_answer += 1
            return False
        if command_id in seen:
            self.repeats += 1
        seen.add(command_id)
        return True

    def summary(self) -> dict[str, int]:
        return {k: v for k, v in asdict(self).items() if k != "ids"}

    @staticmethod
    def seen_text(seen: dict[str, Any]) -> str:
        """The fleet's final counts, for a line of output."""
        names = ("received", "answered", "repeats", "after_answer", "errors", "drops")
        return ", ".join(f"{name.replace('_', ' ')} {seen[name]:,}" for name in names)


RESPONSE = {"ok": True}


async def ws_device(base: str, token: str, tally: Tally) -> None:
    import websockets

    seen: set[int] = set()
    answered: set[int] = set()
    url = f"{base}/ws/v1/{token}/telemetry"
    while True:
        try:
            async with websockets.connect(url, open_timeout=120, ping_interval=None, compression=None) as ws:
                tally.connected += 1
                try:
                    async for raw in ws:
                        message = orjson.loads(raw)
                        if "rpc" in message:
                            command_id = message["rpc"]["id"]
                            if tally.command(command_id, seen, answered):
                                await ws.send(orjson.dumps({"$rpc": {"id": command_id, "response": RESPONSE}}).decode())
                                answered.add(command_id)
                                tally.answered += 1
                        elif "error" in message:
                            tally.errors += 1
                finally:
                    tally.connected -= 1
        except (OSError, TimeoutError, websockets.WebSocketException):
            pass
        tally.drops += 1
        await asyncio.sleep(1.0)


async def poll_device(port: int, token: str, tally: Tally, polling: list[int]) -> None:
    seen: set[int] = set()
    answered: set[int] = set()
    connection = HttpConnection(port)
    first = True
    while True:
        try:
            request = connection.request("GET", f"/api/v1/{token}/rpc?timeout={POLL_MS}")
            if first:  # counted as connected once its first poll is on its way
                first, polling[0] = False, polling[0] + 1
            status, body = await request
            if status == 200:
                command_id = orjson.loads(body)["id"]
                if tally.command(command_id, seen, answered):
                    reply = orjson.dumps(RESPONSE)
                    status, _ = await connection.request("POST", f"/api/v1/{token}/rpc/{command_id}", reply)
                    answered.add(command_id)
                    tally.answered += 1
            if status not in (200, 408):
                tally.errors += 1
        except (OSError, ValueError, asyncio.IncompleteReadError):
            tally.drops += 1
            await asyncio.sleep(1.0)


class MqttDevice:
    """A paho client on the fleet's asyncio loop: read and write on socket readiness, no thread of its own."""

    def __init__(self, loop: asyncio.AbstractEventLoop, port: int, key: str, tally: Tally) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.key, self.tally = key, tally
        self.closing = False  # a disconnect of ours is no lost connection
        self.seen: set[int] = set()
        self.answered: set[int] = set()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{key}", protocol=mqtt.MQTTv311)
        client.on_socket_open = lambda c, _, sock: loop.add_reader(sock, c.loop_read)
        client.on_socket_close = lambda c, _, sock: loop.remove_reader(sock)
        client.on_socket_register_write = lambda c, _, sock: loop.add_writer(sock, c.loop_write)
        client.on_socket_unregister_write = lambda c, _, sock: loop.remove_writer(sock)
        client.on_connect = self._connected
        client.on_subscribe = self._subscribed
        client.on_disconnect = self._disconnected
        client.on_message = self._message
        self.client = client
        client.connect("127.0.0.1", port, keepalive=60)

    def _connected(self, client, userdata, flags, reason_code, properties) -> None:
        client.subscribe(f"devices/{self.key}/rpc/request/+", qos=1)

    def _subscribed(self, client, userdata, mid, reason_codes, properties) -> None:
        # One telemetry message first: a bridge worker hands commands only to devices it has heard from.
        client.publish(f"devices/{self.key}/telemetry", orjson.dumps({"ts": now_ms(), "values": {"warm": 1}}), qos=1)
        self.tally.connected += 1

    def _disconnected(self, client, userdata, flags, reason_code, properties) -> None:
        self.tally.connected -= 1
        self.tally.drops += not self.closing

    def _message(self, client, userdata, message) -> None:
        command_id = int(message.topic.rsplit("/", 1)[1])
        if self.tally.command(command_id, self.seen, self.answered):
            client.publish(f"devices/{self.key}/rpc/response/{command_id}", orjson.dumps(RESPONSE), qos=1)
            self.answered.add(command_id)
            self.tally.answered += 1


async def mqtt_fleet(port: int, keys: list[str], tally: Tally) -> None:
    loop = asyncio.get_running_loop()
    devices = []
    try:
        for key in keys:
            devices.append(MqttDevice(loop, port, key, tally))
            await asyncio.sleep(0)  # the ones already connected go on meanwhile
        while True:
            await asyncio.sleep(1.0)
            for device in devices:
                device.client.loop_misc()  # keep-alive pings
    finally:
        for device in devices:
            device.closing = True
            device.client.disconnect()


async def fleet(kind: str, target: str, credentials: list[str], pipe) -> None:
    """Connect every device at once, say when they are, answer commands; `tally` when asked, `stop` to end."""
    tally = Tally()
    polling = [0]
    pipe.send(("connecting", time.time()))
    if kind == "ws":
        tasks = [asyncio.create_task(ws_device(target, token, tally)) for token in credentials]
    elif kind == "http":
        port = int(target.rsplit(":", 1)[1])
        tasks = [asyncio.create_task(poll_device(port, token, tally, polling)) for token in credentials]
    else:
        tasks = [asyncio.create_task(mqtt_fleet(int(target), credentials, tally))]
    deadline = time.monotonic() + 180
    while max(tally.connected, polling[0]) < len(credentials) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)  # bounded polling: counters, no event to wait on
    pipe.send(("ready", max(tally.connected, polling[0]), time.time()))
    while await asyncio.to_thread(pipe.recv) != "stop":
        pipe.send(("tally", tally.summary()))
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    pipe.send(("done", {**tally.summary(), "ids": tally.ids}))


def fleet_process(kind: str, target: str, credentials: list[str], pipe) -> None:
    asyncio.run(fleet(kind, target, credentials, pipe))


class Fleet:
    """The fleet's process, seen from here."""

    def __init__(self, kind: str, target: str, credentials: list[str]) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipe, child = context.Pipe()
        self.process = context.Process(target=fleet_process, args=(kind, target, credentials, child), daemon=True)
        self.process.start()
        self.connecting_at = 0.0

    async def _recv(self, what: str, timeout: float = 240) -> tuple:
        if not await asyncio.to_thread(self.pipe.poll, timeout):
            raise SystemExit(f"the device fleet did not say {what} within {timeout:.0f} s")
        message = self.pipe.recv()
        assert message[0] == what, message  # our own protocol: a message out of turn is a bench bug
        return message

    async def ready(self) -> tuple[int, float]:
        """(devices connected, seconds from the first connect to the last)."""
        self.connecting_at = (await self._recv("connecting"))[1]
        _, connected, at = await self._recv("ready")
        return connected, at - self.connecting_at

    async def tally(self) -> dict[str, int]:
        self.pipe.send("tally")
        return (await self._recv("tally"))[1]

    async def stop(self) -> dict[str, Any]:
        self.pipe.send("stop")
        done = (await self._recv("done", 60))[1]
        await asyncio.to_thread(self.process.join, 10)
        return done


# Usage of the processes that take part ------------------------------------------------------------------


@dataclass
class Usage:
    """CPU seconds of each party from a starting point; `cores` divides them by the wall time since."""

    parties: dict[str, list[int]]
    started: float = field(default_factory=time.monotonic)
    cpu: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.cpu = {name: cpu_seconds(pids) for name, pids in self.parties.items()}
        self.cpu["all"] = machine_busy_seconds()

    def cores(self) -> dict[str, float]:
        wall = time.monotonic() - self.started
        now = {name: cpu_seconds(pids) for name, pids in self.parties.items()}
        now["all"] = machine_busy_seconds()
        return {name: (now[name] - self.cpu[name]) / wall for name in now}


def cores_text(cores: dict[str, float]) -> str:
    return " / ".join(f"{cores[name]:.2f}" if name in cores else "–" for name in CORE_PARTIES)


CORE_PARTIES = ("hub", "bridge", "db", "fleet", "operator", "all")


async def watch_peak_rss(pid: int, peak: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], rss_kib(pid))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.2)


# The two-way sweep --------------------------------------------------------------------------------------


@dataclass
class Phase:
    rate: int
    latencies: list[float] = field(default_factory=list)  # seconds, POST → 200
    statuses: Counter = field(default_factory=Counter)  # HTTP status (0: no answer) or "not sent"
    sending_seconds: float = 0.0
    device: dict[str, int] = field(default_factory=dict)  # what the fleet saw during the phase
    cores: dict[str, float] = field(default_factory=dict)
    peak_rss_kib: int = 0

    @property
    def sent(self) -> int:
        return sum(n for status, n in self.statuses.items() if status != "not sent")

    def broken(self) -> str | None:
        """Why this rate breaks, or None."""
        p99 = p50_p99(self.latencies)[1]
        others = {status: n for status, n in self.statuses.items() if status != 200}
        if others:
            return ", ".join(f"{n} × {_status_name(status)}" for status, n in sorted(others.items(), key=str))
        if self.device.get("errors") or self.device.get("drops"):
            return f"devices saw {self.device.get('errors')} errors, {self.device.get('drops')} lost connections"
        if p99 > GOAL_P99:
            return f"p99 {p99 * 1000:,.0f} ms > {GOAL_P99 * 1000:,.0f} ms"
        return None


def _status_name(status: int | str) -> str:
    return {0: "no answer", 504: "504 (timed out)", 429: "429"}.get(status, str(status))  # type: ignore[call-overload]


async def command_sent(operator: Operator, key: str, phase: Phase, n: int, timeout_ms: int) -> None:
    body = {"method": "bench.echo", "params": {"n": n}, "timeout": timeout_ms}
    began = time.perf_counter()
    status, answer = await operator.post(f"/api/v1/devices/{key}/rpc", body, timeout_ms / 1000 + 15)
    if status == 200 and answer.get("state") != "successful":
        status = f"200 {answer.get('state')}"
    if status == 200:
        phase.latencies.append(time.perf_counter() - began)
    phase.statuses[status] += 1


async def rate_phase(operator: Operator, keys: list[str], rate: int, seconds: float, timeout_ms: int) -> Phase:
    """`rate` commands/s to random devices for `seconds`, on schedule; returns once every one is answered."""
    phase = Phase(rate)
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05
    tasks = []
    for n in range(int(rate * seconds)):
        if (delay := start + n / rate - loop.time()) > 0:
            await asyncio.sleep(delay)
        if operator.in_flight >= MAX_IN_FLIGHT:
            phase.statuses["not sent"] += 1
            continue
        tasks.append(asyncio.create_task(command_sent(operator, random.choice(keys), phase, n, timeout_ms)))
    phase.sending_seconds = loop.time() - start
    await asyncio.gather(*tasks)
    return phase


async def transport_sweep(kind: str, hub, env: dict[str, str], token: str, args: argparse.Namespace) -> list[Phase]:
    """Connect the transport's fleet, then the rates in turn until one breaks."""
    devices = devices_copy(env["HUB_DATABASE_URL"], args.devices, prefix=f"{kind}-")
    keys = [d.key for d in devices]
    with contextlib.ExitStack() as stack:
        parties = {"hub": [hub.process.pid]}
        if kind == "mqtt":
            workdir = Path(env["HUB_VAR_DIR"])
            _broker, port = stack.enter_context(mosquitto_running(workdir))
            bridge = stack.enter_context(bridge_running(env, port))
            parties |= {"bridge": [bridge.pid]}
            fleet = Fleet(kind, str(port), keys)
        else:
            fleet = Fleet(kind, hub.ws if kind == "ws" else hub.http, [d.token for d in devices])
        connected, took = await fleet.ready()
        if kind == "mqtt":
            await heard_by_bridge(env["HUB_DATABASE_URL"], keys)
        elif kind == "http":
            await asyncio.sleep(2.0)  # the last polls reach the hub and wait there
        operator = Operator(hub.port, token)
        waited = await settled(operator, keys, args.command_timeout)
        console.print(f"{kind}: {connected:,} of {len(keys):,} devices connected in {took:.1f} s; commands answered "
                      f"within {SETTLED * 1000:.0f} ms {waited:.1f} s later; hub RSS "
                      f"{rss_kib(hub.process.pid) / 1024:.0f} MiB")  # fmt: skip
        parties |= {"fleet": [fleet.process.pid], "operator": [os.getpid()]}
        phases = []
        try:
            for rate in args.rates:
                before = await fleet.tally()
                usage = Usage({**parties, "db": database_backend_pids(env["HUB_DATABASE_URL"])})
                peak, stop = [0], asyncio.Event()
                watching = asyncio.create_task(watch_peak_rss(hub.process.pid, peak, stop))
                phase = await rate_phase(operator, keys, rate, args.seconds, args.command_timeout)
                stop.set()
                await watching
                phase.cores, phase.peak_rss_kib = usage.cores(), peak[0]
                after = await fleet.tally()
                phase.device = {k: after[k] - before[k] for k in after}
                phases.append(phase)
                phase_line(kind, phase)
                if phase.broken():
                    break
        finally:
            seen = await fleet.stop()
        console.print(f"{kind}: the devices saw: {Tally.seen_text(seen)}")
    return phases


async def settled(operator: Operator, keys: list[str], timeout_ms: int, limit: float = 90.0) -> float:
    """One command at a time until three in a row are answered within SETTLED (the hub has done the work of a
    thousand connects); the seconds that took."""
    began, streak = time.monotonic(), 0
    while streak < 3 and time.monotonic() - began < limit:
        probe = Phase(0)
        await command_sent(operator, random.choice(keys), probe, 0, timeout_ms)
        streak = streak + 1 if probe.latencies and probe.latencies[0] < SETTLED else 0
    return time.monotonic() - began


async def heard_by_bridge(url: str, keys: list[str], timeout: float = 120) -> None:
    """Wait until the bridge has stored every device's first telemetry message: it has heard from them all."""
    deadline = time.monotonic() + timeout
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        while True:
            stored = await (await conn.execute(
                "SELECT count(DISTINCT r.device_id) FROM ingest_reading r JOIN devices_device d ON d.id = r.device_id"
                " WHERE d.key = ANY(%s) AND r.key = 'warm'", [keys],
            )).fetchone()  # fmt: skip
            if stored[0] >= len(keys):
                return
            if time.monotonic() > deadline:
                raise SystemExit(f"the bridge heard from {stored[0]} of {len(keys)} MQTT devices in {timeout:.0f} s")
            await asyncio.sleep(0.2)


def phase_line(kind: str, phase: Phase) -> None:
    p50, p99 = p50_p99(phase.latencies)
    verdict = phase.broken()
    console.print(
        f"{kind:>4} {phase.rate:>5}/s: sent {phase.sent:,} in {phase.sending_seconds:.1f} s, statuses "
        f"{dict(phase.statuses)}, p50 {p50 * 1000:.1f} ms p99 {p99 * 1000:.1f} ms, cores {cores_text(phase.cores)}"
        f", hub peak RSS {phase.peak_rss_kib / 1024:.0f} MiB" + (f" — BREAKS: {verdict}" if verdict else ""),
        markup=False,
    )


# Persistent commands for offline devices ----------------------------------------------------------------


@dataclass
class Offline:
    queued: int = 0
    queue_seconds: float = 0.0
    refused: Counter = field(default_factory=Counter)
    connect_seconds: float = 0.0
    connected: int = 0
    delivered: int = 0  # distinct commands the devices received
    after_answer: int = 0
    repeats: int = 0
    lost: int = 0
    all_delivered_s: float | None = None
    all_successful_s: float | None = None
    states: dict[str, int] = field(default_factory=dict)
    queue_cores: dict[str, float] = field(default_factory=dict)
    cores: dict[str, float] = field(default_factory=dict)  # while delivering
    peak_rss_kib: int = 0


async def offline_commands(hub, env: dict[str, str], token: str, args: argparse.Namespace) -> Offline:
    url = env["HUB_DATABASE_URL"]
    devices = devices_copy(url, args.devices, prefix="away-")
    each = max(1, args.offline_commands // args.devices)
    result = Offline()
    usage = Usage({"hub": [hub.process.pid], "db": database_backend_pids(url), "operator": [os.getpid()]})
    ids = await queue_persistent(hub.port, token, [d.key for d in devices], each, args.queue_concurrency, result)
    result.queue_cores = usage.cores()
    console.print(f"offline: {result.queued:,} persistent commands queued in {result.queue_seconds:.1f} s "
                  f"({result.queued / result.queue_seconds:,.0f}/s); refused {dict(result.refused)}; "
                  f"cores {cores_text(result.queue_cores)}")  # fmt: skip
    peak, stop = [0], asyncio.Event()
    watching = asyncio.create_task(watch_peak_rss(hub.process.pid, peak, stop))
    fleet = Fleet("ws", hub.ws, [d.token for d in devices])
    usage = Usage({"hub": [hub.process.pid], "db": database_backend_pids(url), "fleet": [fleet.process.pid],
                   "operator": [os.getpid()]})  # fmt: skip
    try:
        result.connected, result.connect_seconds = await fleet.ready()
        await until_all_successful(url, ids, fleet.connecting_at, args.offline_timeout, result)
        result.cores = usage.cores()  # before the fleet's process ends
    finally:
        seen = await fleet.stop()
        stop.set()
        await watching
    result.peak_rss_kib = peak[0]
    received = set(seen["ids"])
    result.delivered = len(received & set(ids))
    result.after_answer, result.repeats = seen["after_answer"], seen["repeats"]
    result.lost = len(set(ids) - received)
    console.print(f"offline: the devices saw: {Tally.seen_text(seen)}")
    return result


async def queue_persistent(
    port: int, token: str, keys: list[str], each: int, concurrency: int, result: Offline
) -> list[int]:
    """`each` persistent commands per device through the API, `concurrency` at a time; their ids."""
    operator = Operator(port, token)
    work = [(key, i) for i in range(each) for key in keys]
    ids: list[int] = []

    async def worker() -> None:
        while work:
            key, i = work.pop()
            body = {"method": "bench.later", "params": {"n": i}, "persistent": True, "timeout": 60_000}
            status, answer = await operator.post(f"/api/v1/devices/{key}/rpc", body, 60)
            if status == 202:
                ids.append(answer["id"])
            else:
                result.refused[status] += 1

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.queue_seconds, result.queued = time.perf_counter() - began, len(ids)
    return ids


async def until_all_successful(url: str, ids: list[int], since: float, timeout: float, result: Offline) -> None:
    """Poll the database until every command is successful (or `timeout` seconds after the devices connect)."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        while True:
            rows = await (await conn.execute(
                "SELECT state, count(*), count(delivered_at) FROM control_command WHERE id = ANY(%s) GROUP BY state",
                [ids],
            )).fetchall()  # fmt: skip
            result.states = {state: n for state, n, _ in rows}
            delivered = sum(d for _, _, d in rows)
            if delivered >= len(ids) and result.all_delivered_s is None:
                result.all_delivered_s = time.time() - since
            if result.states.get("successful", 0) >= len(ids):
                result.all_successful_s = time.time() - since
                return
            if time.time() - since > timeout:
                return
            await asyncio.sleep(0.1)


# The report ---------------------------------------------------------------------------------------------


def sweep_table(sweeps: dict[str, list[Phase]], devices: int) -> None:
    rows = []
    for kind, phases in sweeps.items():
        for phase in phases:
            p50, p99 = p50_p99(phase.latencies)
            others = phase.sent - phase.statuses[200] - phase.statuses[504]
            rows.append([
                TRANSPORTS[kind], f"{phase.rate:,}", f"{phase.sent:,}", f"{phase.statuses[200]:,}",
                f"{phase.statuses[504]:,}", f"{others + phase.statuses['not sent']:,}",
                f"{p50 * 1000:,.1f} / {p99 * 1000:,.1f}", f"{phase.statuses[200] / phase.sending_seconds:,.0f}",
                cores_text(phase.cores), f"{phase.peak_rss_kib / 1024:,.0f}", phase.broken() or "holds",
            ])  # fmt: skip
    columns = ["transport", "offered /s", "sent", "200", "504", "other", "POST→200 p50 / p99 ms", "answered /s",
               f"cores {'/'.join(CORE_PARTIES)}", "hub peak RSS MiB",
               f"verdict (p99 ≤ {GOAL_P99 * 1000:,.0f} ms)"]  # fmt: skip
    table(f"Two-way commands, {devices:,} devices connected per transport", columns, rows)
    for kind, phases in sweeps.items():
        broke = next((p for p in phases if p.broken()), None)
        held = [p.rate for p in phases if not p.broken()]
        if broke is not None:
            console.print(f"{TRANSPORTS[kind]}: breaks at {broke.rate:,}/s ({broke.broken()})"
                          + (f"; holds at {max(held):,}/s" if held else ""), markup=False)  # fmt: skip
        elif phases:
            console.print(f"{TRANSPORTS[kind]}: holds up to {phases[-1].rate:,}/s (no break found)")


def offline_table(result: Offline, devices: int) -> None:
    def seconds(value: float | None) -> str:
        return f"{value:.1f}" if value is not None else "not within the timeout"

    rows = [
        ["queued through the API", f"{result.queued:,} in {result.queue_seconds:.1f} s = "
         f"{result.queued / max(result.queue_seconds, 1e-9):,.0f}/s" + (f"; refused {dict(result.refused)}"
                                                                          if result.refused else "")],
        ["devices connected at once (WebSocket)",
         f"{result.connected:,} of {devices:,} in {result.connect_seconds:.1f} s"],
        ["commands delivered", f"{result.delivered:,} of {result.queued:,}"],
        ["delivered again after the device answered", f"{result.after_answer:,}"],
        ["delivered again before it answered", f"{result.repeats:,}"],
        ["lost (never delivered)", f"{result.lost:,}"],
        ["all delivered after connecting began (s)", seconds(result.all_delivered_s)],
        ["all successful after connecting began (s)", seconds(result.all_successful_s)],
        ["states in the database", ", ".join(f"{k} {v:,}" for k, v in sorted(result.states.items()))],
        [f"cores {'/'.join(CORE_PARTIES)} while queueing", cores_text(result.queue_cores)],
        [f"cores {'/'.join(CORE_PARTIES)} while delivering", cores_text(result.cores)],
        ["hub peak RSS (MiB)", f"{result.peak_rss_kib / 1024:,.0f}"],
    ]  # fmt: skip
    table(f"Persistent commands for {devices:,} offline devices", ["", "figure"], rows)


TRANSPORTS = {"ws": "WebSocket", "http": "HTTP long-poll", "mqtt": "MQTT (bridge)"}


async def run(args: argparse.Namespace) -> None:
    with bench_database("commands", redis_url=args.redis_url) as env:
        token = operator_token(env["HUB_DATABASE_URL"])
        sweeps: dict[str, list[Phase]] = {}
        offline = None
        with hubs_running(env, **dict(pair.split("=", 1) for pair in args.hub_env)) as (hub,):
            for kind in args.transports:
                sweeps[kind] = await transport_sweep(kind, hub, env, token, args)
            if args.offline_commands:
                offline = await offline_commands(hub, env, token, args)
    if sweeps:
        sweep_table(sweeps, args.devices)
    if offline is not None:
        offline_table(offline, args.devices)
    settings = ", ".join(args.hub_env) or "defaults"
    console.print(f"{os.cpu_count()} CPUs; one hub process, hub settings: {settings}; command timeout "
                  f"{args.command_timeout:,} ms; {args.seconds:g} s per rate")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=1000, help="connected at once, per transport")
    parser.add_argument("--seconds", type=float, default=4.0, help="of sending, per rate")
    parser.add_argument("--rates", default="10,25,50,100,200,400,800", help="commands/s, swept up until one breaks")
    parser.add_argument("--transports", default="ws,http,mqtt", help="any of ws, http, mqtt (none: skip the sweep)")
    parser.add_argument("--command-timeout", type=int, default=5000, help="ms, each two-way command's timeout")
    parser.add_argument("--offline-commands", type=int, default=10_000, help="persistent ones (0: skip)")
    parser.add_argument("--queue-concurrency", type=int, default=32, help="requests at once while queueing them")
    parser.add_argument("--offline-timeout", type=float, default=180.0, help="s to wait for all to be successful")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--hub-env", action="append", default=[], metavar="NAME=VALUE", help="a hub setting")
    args = parser.parse_args()
    args.rates = [int(n) for n in args.rates.split(",")]
    args.transports = [t for t in args.transports.split(",") if t and t != "none"]
    unknown = set(args.transports) - set(TRANSPORTS)
    if unknown:
        parser.error(f"--transports: unknown {', '.join(sorted(unknown))}")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
