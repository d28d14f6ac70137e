"""`serve --workers 2` stops within its graceful-shutdown limit after SIGTERM under load.

The limit is the one operators are told to allow before SIGKILL (docs/reliability.md): HUB_WRITER_DRAIN_SECONDS + 5.
Within it each worker must also start its writer drain early enough to have HUB_WRITER_DRAIN_SECONDS for it, and
every frame acknowledged before the SIGTERM must be stored. The load is what used to hold a worker up: devices
streaming, dashboards reading, dashboards that stopped reading (their sockets can never be flushed), and a burst
of dashboards opening with a full catch-up (their history queries queue on Channels' one database thread).
"""

import asyncio
import contextlib
import os
import signal
import time
from datetime import datetime
from pathlib import Path

import orjson
import pytest
import websockets
from asgiref.sync import sync_to_async
from django.conf import settings

from clients.viewer import StreamClosed, StreamOpening, ViewerClient, viewer_headers
from core.epoch import now_ms
from tests import rawws
from tests.conftest import database_url_for_tests
from tests.ledger import Ledger, ws_device
from tests.services import REDIS_URL
from tests.waiting import eventually

pytestmark = [pytest.mark.serial, pytest.mark.usefixtures("postgres", "redis")]

DRAIN_SECONDS = 2
LIMIT = DRAIN_SECONDS + 5  # SIGTERM -> SIGKILL, as docs/reliability.md tells operators
MARGIN = 1.0  # the supervisor polls for signals every 0.5 s; process start-up and exit
HISTORY = 20_000  # numeric readings behind the catch-up device: each catch-up query returns HUB_STREAM_CATCHUP_LIMIT
BULK_BYTES = 10 * 2**20  # pushed to every silent viewer: more than any loopback socket buffers (tcp_wmem max 4 MiB)


def descendants(pid: int) -> set[int]:
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        with contextlib.suppress(OSError):
            for child in Path(f"/proc/{parent}/task/{parent}/children").read_text().split():
                found.add(int(child))
                todo.append(int(child))
    return found


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def logged_at(line: str) -> float:
    """The wall-clock time of a plain-format log line (`%(asctime)s ...`, local time)."""
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()  # noqa: DTZ007 - asctime is local


@sync_to_async
def store_history(device_id: int, count: int) -> None:
    from core.epoch import from_epoch_ms
    from storage.models import Reading

    t0 = now_ms() - 86_400_000
    Reading.objects.bulk_create(
        [Reading(device_id=device_id, key="h", ts=from_epoch_ms(t0 + i), value=i) for i in range(count)],
        batch_size=5_000,
    )


async def viewer(hub, key: str, cookie: str, since: int, stop: asyncio.Event, asked: list[int] | None = None) -> None:
    """A dashboard that reads everything it is sent until the hub goes away (`asked` counts its catch-up request,
    sent without waiting for the answer)."""
    with contextlib.suppress(OSError, websockets.WebSocketException, StreamClosed):
        async with ViewerClient.connect(hub.ws, cookie=cookie, key=key) as stream:
            await stream.send(StreamOpening.since(since))
            if asked is not None:
                asked[0] += 1
            while not stop.is_set():
                await stream.receive()


async def silent_viewer(hub, key: str, cookie: str):
    """A dashboard that subscribes, then never reads again (a frozen tab, a dead NAT): a tiny receive window, and
    the client's own reading paused so the kernel buffers fill and stay full."""
    host, port = hub.http.removeprefix("http://").split(":")
    headers = viewer_headers(hub.http, cookie)
    reader, writer, response = await rawws.handshake(
        host, int(port), f"/ws/v1/devices/{key}/stream", headers, rcvbuf=4096
    )
    assert response.startswith("HTTP/1.1 101"), response
    opcode, payload = await rawws.read_frame(reader)
    assert orjson.loads(payload)["type"] == "subscribed"
    writer.write(rawws.frame(0x1, StreamOpening.since(now_ms()).encode()))
    writer.transport.pause_reading()
    return writer


async def bulk(hub, token: str, total_bytes: int) -> None:
    """Large text-reading frames (stored as latest values only, fanned out whole), each awaited until acked."""
    now = now_ms()
    sent = 0
    async with websockets.connect(f"{hub.ws}/ws/v1/{token}/telemetry") as ws:
        frame_no = 0
        while sent < total_bytes:
            frame_no += 1
            body = orjson.dumps([{"ts": now + frame_no, "values": {f"t{i}": "y" * 100 for i in range(500)}}]).decode()
            await ws.send(body)
            assert orjson.loads(await ws.recv()) == {"ack": frame_no}
            sent += len(body)


async def test_sigterm_under_load_stops_the_whole_tree_within_the_limit(make_device, operator_cookie, hub_process):
    streaming = [await sync_to_async(make_device)() for _ in range(4)]
    loud = await sync_to_async(make_device)("loud")  # followed by the silent viewers
    archive = await sync_to_async(make_device)("archive")  # has a long history to catch up on
    await store_history(archive.id, HISTORY)
    hub = hub_process(
        workers=2,
        HUB_DATABASE_URL=database_url_for_tests(),
        HUB_REDIS_URL=REDIS_URL,
        HUB_CHANNEL_PREFIX=f"{os.environ['HUB_CHANNEL_PREFIX']}shutdown",
        HUB_SECRET_KEY=settings.SECRET_KEY,  # the operator's session cookie was signed with it
        HUB_WRITER_DRAIN_SECONDS=str(DRAIN_SECONDS),
        HUB_LOG_LEVEL="INFO",
    )
    await hub.start().ready()
    processes = {hub.process.pid}
    try:
        await eventually(lambda: len(descendants(hub.process.pid)) >= 2, what="both workers")
        processes |= descendants(hub.process.pid)
        since = now_ms()
        ledger, stop = Ledger(), asyncio.Event()
        devices = [
            asyncio.create_task(
                ws_device(lambda: hub.ws, d.key, d.token, ledger, frames=20_000, per_frame=10, stop=stop)
            )
            for d in streaming
        ]
        viewers = [
            asyncio.create_task(viewer(hub, streaming[i % 4].key, operator_cookie, since, stop)) for i in range(40)
        ]
        silent = [await silent_viewer(hub, loud.key, operator_cookie) for _ in range(6)]
        await bulk(hub, loud.token, BULK_BYTES)  # every silent viewer now has a socket that cannot be flushed
        await eventually(lambda: sum(map(len, ledger.acked.values())) > 1_000, what="devices acked")
        asked = [0]
        viewers += [asyncio.create_task(viewer(hub, archive.key, operator_cookie, 0, stop, asked)) for _ in range(60)]
        await eventually(lambda: asked[0] == 60, what="every archive viewer to ask for its catch-up")
        processes |= descendants(hub.process.pid)
        acked_before = sum(map(len, ledger.acked.values()))

        sigterm_at, started = time.time(), time.monotonic()
        hub.process.send_signal(signal.SIGTERM)
        stop.set()

        async def all_exited() -> bool:
            return not any(running(pid) for pid in processes)

        with contextlib.suppress(AssertionError):
            await eventually(all_exited, timeout=LIMIT + 30, what="the hub's processes to exit")
        took = time.monotonic() - started
        await asyncio.gather(*devices, *viewers, return_exceptions=True)
        for writer in silent:
            writer.transport.abort()
    finally:
        for pid in processes:
            if running(pid):
                os.kill(pid, signal.SIGKILL)

    log = hub.log.read_text()
    print(f"SIGTERM -> every process gone: {took:.2f} s (limit {LIMIT} s)")
    steps = (
        "SIGTERM",
        "Shutting down",
        "Waiting for",
        "running task(s)",
        "shutdown complete",
        "drained",
        "killed",
        "Stopping",
    )
    print("\n".join(line for line in log.splitlines() if any(step in line for step in steps)))
    assert took <= LIMIT + MARGIN, f"the hub took {took:.1f} s to stop after SIGTERM; the limit is {LIMIT} s"
    drains = [logged_at(line) - sigterm_at for line in log.splitlines() if "Waiting for application shutdown" in line]
    assert len(drains) == 2, "each worker ran its lifespan shutdown (the writer drain)"
    assert max(drains) <= LIMIT - DRAIN_SECONDS, (
        f"a worker started draining its writer {max(drains):.1f} s after SIGTERM: too late to have its"
        f" {DRAIN_SECONDS} s before the {LIMIT} s limit"
    )
    assert log.count("writer drained") == 2
    report = await ledger.reconcile()
    assert acked_before > 0
    assert report["lost"] == report["unexpected"] == report["duplicates"] == 0
