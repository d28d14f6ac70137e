"""MQTT benchmark: D QoS 1 publishers → Mosquitto → the bridge → PostgreSQL, beside Mosquitto's own rate for
the same messages to a plain subscriber (mosquitto_sub) in the same run: the ceiling, and the ratio.

    .venv/bin/python bench/mqtt.py                                      # 20 devices x 2,000 single readings
    .venv/bin/python bench/mqtt.py --messages 100 --readings 100        # batched payloads
    .venv/bin/python bench/mqtt.py --rate 5000                          # latency at a fixed offered load

Between the two, bench/paho_ceiling.py takes the same messages: paho-mqtt subscribed as the bridge is, each
message parsed and acked at once, no storage (the library's ceiling in one Python process).

Starts its own Mosquitto (deploy/mosquitto/mosquitto.conf on a free loopback port, anonymous) and a scratch
PostgreSQL database that is dropped at the end. Needs PostgreSQL, Redis and the mosquitto binaries.
Latency is publish → fan-out after commit (the dashboards' view of "stored"), read from the channel layer.
"""

import argparse
import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from harness import (
    ROOT,
    console,
    database_create,
    database_drop,
    devices_copy,
    hub_env,
    listening,
    migrate,
    p50_p99,
    table,
    wait_for,
)

from core.epoch import now_ms
from testkit.process import free_port


@dataclass
class Phase:
    name: str
    messages: int
    first_sent: float
    last_received: float
    latencies_ms: list[float]

    @property
    def rate(self) -> float:
        return self.messages / max(self.last_received - self.first_sent, 1e-9)

    def line(self, readings: int) -> str:
        p50, p99 = p50_p99(self.latencies_ms)
        per_s = f"{self.rate:,.0f} msg/s" + (f" ({self.rate * readings:,.0f} readings/s)" if readings > 1 else "")
        return (
            f"  {self.name:<38} {self.messages:,} messages in {self.last_received - self.first_sent:.2f} s"
            f" = {per_s}; publish→{'stored' if 'bridge' in self.name else 'received'}"
            f" p50 {p50:.1f} ms, p99 {p99:.1f} ms"
        )

    def row(self, readings: int) -> list[str]:
        p50, p99 = p50_p99(self.latencies_ms)
        return [
            self.name,
            f"{self.messages:,}",
            f"{self.rate:,.0f}",
            f"{self.rate * readings:,.0f}",
            f"{p50:.1f} / {p99:.1f}",
        ]


# Publishers ---------------------------------------------------------------------------------------------


def payload(base_ts: int, readings: int) -> bytes:
    import orjson

    sent = time.time() * 1000  # carried as a value: the fan-out and the plain subscriber both see it
    if readings == 1:
        return orjson.dumps({"ts": base_ts, "values": {"sent": sent}})
    return orjson.dumps([{"ts": base_ts + j, "values": {"sent": sent}} for j in range(readings)])


def publish_device(port: int, key: str, args: argparse.Namespace, t0: int, start: float) -> int:
    """One device: a `mosquitto_pub -l` (C, QoS 1, 20 in flight) fed one line per message; its exit status
    says whether the broker acknowledged them all. Lines are stamped as they are written."""
    binary = shutil.which("mosquitto_pub") or "/usr/bin/mosquitto_pub"
    command = [binary, "-p", str(port), "-q", "1", "-i", f"bench-pub-{key}", "-t", f"devices/{key}/telemetry", "-l"]
    publisher = subprocess.Popen(command, stdin=subprocess.PIPE)
    interval = args.devices / args.rate if args.rate else 0.0
    time.sleep(max(0.0, start - time.time()))
    for i in range(args.messages):
        if interval:
            time.sleep(max(0.0, start + i * interval - time.time()))
        publisher.stdin.write(payload(t0 + i * args.readings, args.readings) + b"\n")
        if interval:
            publisher.stdin.flush()
    publisher.stdin.close()
    return args.messages if publisher.wait(timeout=args.timeout) == 0 else 0


def publish_all(port: int, keys: list[str], args: argparse.Namespace, t0: int) -> tuple[float, int]:
    """Every device at once; returns (start time, messages the broker acknowledged)."""
    start = time.time() + 0.5
    acked: list[int] = []
    threads = [
        threading.Thread(target=lambda k=key: acked.append(publish_device(port, k, args, t0, start))) for key in keys
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return start, sum(acked)


# Mosquitto and the plain subscriber ---------------------------------------------------------------------


def broker_start(workdir: Path) -> tuple[subprocess.Popen, int]:
    """deploy/mosquitto/mosquitto.conf on a free loopback port, persistence in workdir, anonymous."""
    port = free_port()
    config = (ROOT / "deploy/mosquitto/mosquitto.conf").read_text()
    config = re.sub(r"^listener .*$", f"listener {port} 127.0.0.1", config, flags=re.M)
    config = re.sub(r"^persistence_location .*$", f"persistence_location {workdir}/", config, flags=re.M)
    config = re.sub(r"^(password_file|acl_file) .*$", "", config, flags=re.M)
    config = config.replace("allow_anonymous false", "allow_anonymous true")
    config += f"\nuser {os.environ.get('USER') or 'root'}\n"
    (workdir / "mosquitto.conf").write_text(config)
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    log = (workdir / "mosquitto.log").open("w")
    process = subprocess.Popen([binary, "-c", str(workdir / "mosquitto.conf")], stdout=log, stderr=log)
    wait_for(lambda: listening(port), 10, "mosquitto")
    return process, port


def ceiling_phase(port: int, keys: list[str], args: argparse.Namespace, t0: int) -> Phase:
    """The same publishers into mosquitto_sub (QoS 1, MQTT 5): what the broker alone delivers."""
    import orjson

    total = len(keys) * args.messages
    binary = shutil.which("mosquitto_sub") or "/usr/bin/mosquitto_sub"
    command = [binary, "-p", str(port), "-V", "5", "-q", "1", "-t", "devices/+/telemetry", "-C", str(total)]
    sub = subprocess.Popen([*command, "-F", "%U %p"], stdout=subprocess.PIPE)
    time.sleep(0.5)  # mosquitto_sub has subscribed
    lines: list[bytes] = []
    reader = threading.Thread(target=lambda: lines.extend(sub.stdout), daemon=True)
    reader.start()
    start, acked = publish_all(port, keys, args, t0)
    sub.wait(timeout=300)
    reader.join()
    latencies, last = [], 0.0
    for line in lines:
        received, body = line.split(b" ", 1)
        document = orjson.loads(body)
        first = document[0] if isinstance(document, list) else document
        latencies.append(float(received) * 1000 - first["values"]["sent"])
        last = max(last, float(received))
    return Phase("mosquitto → mosquitto_sub (ceiling)", len(lines), start, last, latencies)


def library_phase(port: int, keys: list[str], args: argparse.Namespace, t0: int) -> Phase:
    """The same publishers into bench/paho_ceiling.py: paho and the hub's parser alone, acking at once (QoS 1,
    MQTT 5, the bridge's receive maximum), in one Python process: the bridge's ceiling without storage."""
    import orjson

    total = len(keys) * args.messages
    command = [sys.executable, str(ROOT / "bench" / "paho_ceiling.py"), "--port", str(port), "--messages", str(total)]
    sub = subprocess.Popen(command, stdout=subprocess.PIPE, env={**os.environ, "HUB_LOG_LEVEL": "WARNING"})
    assert sub.stdout is not None  # noqa: S101 - piped above
    sub.stdout.readline()  # "subscribing"
    time.sleep(0.5)
    start, _acked = publish_all(port, keys, args, t0)
    out, _ = sub.communicate(timeout=300)
    summary = orjson.loads(out.splitlines()[-1])
    return Phase("mosquitto → paho + parse (library)", summary["messages"], start, summary["last"],
                 summary["latencies"])  # fmt: skip


# The bridge ---------------------------------------------------------------------------------------------


async def bridge_phase(port: int, keys: list[str], args: argparse.Namespace, t0: int, env: dict) -> Phase:
    """Bridge workers store the messages; readings are timed as they are fanned out after commit."""
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    channel = await layer.new_channel()
    for key in keys:
        await layer.group_add(f"device.{key}", channel)
    expected = len(keys) * args.messages * args.readings
    latencies: list[float] = []
    last = [0.0]

    async def collect() -> None:
        while len(latencies) < expected:
            message = await layer.receive(channel)
            now = time.time()
            latencies.extend(now * 1000 - value for _ts, key, value in message["readings"] if key == "sent")
            last[0] = now

    collecting = asyncio.create_task(collect())
    start, _acked = await asyncio.to_thread(publish_all, port, keys, args, t0)
    try:
        await asyncio.wait_for(collecting, timeout=args.timeout)
    except TimeoutError:
        console.print(f"  (timed out: {len(latencies)} of {expected} readings fanned out)")
    stored_messages = len(latencies) // args.readings
    return Phase(f"mosquitto → {args.workers} bridge → PostgreSQL", stored_messages, start, last[0], latencies)


def bridges_start(port: int, args: argparse.Namespace, env: dict, workdir: Path) -> list[subprocess.Popen]:
    processes = []
    for n in range(args.workers):
        log = (workdir / f"bridge-{n}.log").open("w")
        worker_env = {
            **env,
            "HUB_MQTT_URL": f"mqtt://127.0.0.1:{port}",
            "HUB_MQTT_CLIENT_ID": f"bench-bridge-{os.getpid()}-{n}",
            "HUB_MQTT_SHARE_GROUP": "bench",
            "HUB_MQTT_STATS_SECONDS": "1",
        }
        profile = ["-m", "cProfile", "-o", str(args.profile / f"bridge-{n}.prof")] if args.profile else []
        command = [sys.executable, *profile, "manage.py", "mqtt_bridge"]
        processes.append(subprocess.Popen(command, cwd=ROOT, env=worker_env, stdout=log, stderr=log))
    return processes


def bridges_stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)


def warm_up(port: int, keys: list[str], ts: int) -> None:
    """One message per device through the bridge, untimed: connections, pools and device lookups warm."""
    binary = shutil.which("mosquitto_pub") or "/usr/bin/mosquitto_pub"
    deadline = time.monotonic() + 30
    while stored_counts(keys, "warm")[0] < len(keys):
        if time.monotonic() > deadline:
            raise SystemExit("the bridge did not store the warm-up messages within 30 s")
        for key in keys:  # resent until stored: stored once
            message = f'{{"ts": {ts}, "values": {{"warm": 1}}}}'
            subprocess.run([binary, "-p", str(port), "-q", "1", "-t", f"devices/{key}/telemetry", "-m", message])
        time.sleep(0.5)


# Setup and the report -----------------------------------------------------------------------------------


def stored_counts(keys: list[str], reading_key: str) -> tuple[int, int]:
    """(readings stored, distinct (device, ts)) of one reading key of the bench devices."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), count(DISTINCT (r.device_id, r.ts)) FROM ingest_reading r"
            " JOIN devices_device d ON d.id = r.device_id WHERE d.key = ANY(%s) AND r.key = %s",
            [keys, reading_key],
        )
        return cursor.fetchone()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=20, help="publishers, one device each")
    parser.add_argument("--messages", type=int, default=2000, help="QoS 1 messages per device")
    parser.add_argument("--readings", type=int, default=1, help="readings per message (>1: batched payloads)")
    parser.add_argument("--rate", type=float, default=0.0, help="total messages/s offered (0: as fast as possible)")
    parser.add_argument("--workers", type=int, default=1, help="bridge workers on one shared subscription")
    parser.add_argument("--profile", type=Path, help="directory for the bridge workers' cProfile output")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the bridge to store all")
    parser.add_argument(
        "--admin-url", default=os.environ.get("HUB_BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1/postgres")
    )
    parser.add_argument("--redis-url", default=os.environ.get("HUB_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"))
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # clean up (broker, bridge, database) on SIGTERM too

    workdir = Path(tempfile.mkdtemp(prefix="hub-bench-mqtt-"))
    db_name = f"hub_bench_mqtt_{os.getpid()}"
    env = hub_env(
        database_create(db_name, args.admin_url),
        redis_url=args.redis_url,
        prefix=f"benchmqtt{os.getpid()}",
        HUB_VAR_DIR=str(workdir),
        HUB_LOG_LEVEL="INFO",
        DJANGO_SETTINGS_MODULE="hub.settings",
    )
    os.environ.update(env)
    broker, bridges = None, []
    try:
        migrate(env)
        import django

        django.setup()
        keys = [d.key for d in devices_copy(env["HUB_DATABASE_URL"], args.devices, prefix="bench-")]
        broker, port = broker_start(workdir)
        t0 = now_ms() - 7_200_000  # the ceiling's ts; the bridge's start an hour later
        console.print(
            f"MQTT bench: {args.devices} devices x {args.messages} QoS 1 messages x {args.readings} readings, "
            f"{'max rate' if not args.rate else f'{args.rate:,.0f} msg/s offered'}, {os.cpu_count()} CPUs"
        )
        ceiling = ceiling_phase(port, keys, args, t0)
        console.print(ceiling.line(args.readings))
        library = library_phase(port, keys, args, t0 + 1_800_000)
        console.print(library.line(args.readings))

        bridges = bridges_start(port, args, env, workdir)
        warm_up(port, keys, t0 - 3_600_000)
        stored = asyncio.run(bridge_phase(port, keys, args, t0 + 3_600_000, env))
        console.print(stored.line(args.readings))
        rows, distinct = stored_counts(keys, "sent")
        expected = args.devices * args.messages * args.readings
        console.print(
            f"  ratio bridge/ceiling {stored.rate / ceiling.rate:.2f}"
            f" (library/ceiling {library.rate / ceiling.rate:.2f}, bridge/library {stored.rate / library.rate:.2f});"
            f" stored {rows:,} of {expected:,} readings,"
            f" {rows - distinct} twice; broker dropped messages: {'dropped' in (workdir / 'mosquitto.log').read_text()}"
        )
        bridges_stop(bridges)
        for n in range(args.workers):
            status = [line for line in (workdir / f"bridge-{n}.log").read_text().splitlines() if "bridge: in" in line]
            worker = status[-1].split("] ", 1)[-1] if status else "(no status line)"
            console.print(f"  worker {n}: {worker}", markup=False)
        columns = ["phase", "messages", "msg/s", "readings/s", "publish→received/stored p50 / p99 ms"]
        rows_out = [ceiling.row(args.readings), library.row(args.readings), stored.row(args.readings)]
        table("MQTT ingest", columns, rows_out)
        console.print(
            f"ratio bridge/ceiling {stored.rate / ceiling.rate:.2f}, library/ceiling {library.rate / ceiling.rate:.2f},"
            f" bridge/library {stored.rate / library.rate:.2f}; stored {rows:,} of {expected:,} readings"
        )
    finally:
        bridges_stop(bridges)
        if broker is not None:
            broker.terminate()
            broker.wait(timeout=10)
        from django.db import connections

        connections.close_all()
        database_drop(db_name, args.admin_url)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
