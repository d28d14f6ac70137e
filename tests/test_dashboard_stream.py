"""The dashboard stream: session and Origin checks, catch-up after `since`, gap-free stitching of history
and live readings, and slow viewers closed without hurting the others. What needs no TCP runs in-process."""

import asyncio
import time
from collections.abc import Callable

import orjson
import pytest
from asgiref.sync import sync_to_async

from clients.device import DeviceClient, Handled
from clients.viewer import StreamClosed, ViewerClient
from core.epoch import now_ms
from devices.services import DeviceIdentity
from ingest.parsing import Reading as R
from storage.models import Reading
from tests import rawws
from tests.inprocess import HandshakeRefused, viewer_in_process
from tests.waiting import eventually

pytestmark = pytest.mark.usefixtures("postgres", "redis")


async def send_frames(
    hub, token: str, frames: list[list[dict]], *, pace: float = 0.0, on_handled: Callable[[Handled], None] | None = None
) -> None:
    """One device connection: every frame sent (one every `pace` s), then every one acked, none rejected."""
    async with DeviceClient.connect(hub.ws, token, on_handled=on_handled) as client:
        for frame in frames:
            await client.send(orjson.dumps(frame).decode())
            if pace:
                await asyncio.sleep(pace)  # pace: the device streams for a while, viewers join meanwhile
        await client.all_acked()
        assert not client.errors, client.errors


@sync_to_async
def stored_after(device_id: int, since: int) -> list[tuple[str, int]]:
    from datetime import UTC, datetime

    rows = Reading.objects.filter(device_id=device_id, ts__gt=datetime.fromtimestamp(since / 1000, UTC))
    return sorted((k, round(ts.timestamp() * 1000)) for k, ts in rows.values_list("key", "ts"))


async def test_login_is_required_and_a_foreign_origin_is_refused(runtime, make_device, operator_cookie):
    device = await sync_to_async(make_device)()
    with pytest.raises(StreamClosed) as closed:
        async with viewer_in_process(runtime, cookie="", key=device.key):
            pass
    assert closed.value.code == 4401
    with pytest.raises(HandshakeRefused):
        async with viewer_in_process(runtime, cookie=operator_cookie, key=device.key, origin="https://evil.example"):
            pass
    with pytest.raises(StreamClosed) as closed:
        async with viewer_in_process(runtime, cookie=operator_cookie, key="ghost"):
            pass
    assert closed.value.code == 4404


async def test_catch_up_returns_exactly_what_came_after_since(runtime, make_device, operator_cookie):
    made = await sync_to_async(make_device)()
    t0 = now_ms() - 60_000
    readings = [R(t0 + i, key, float(sign * i)) for i in range(50) for key, sign in (("a", 1), ("b", -1))]
    await (await runtime.writer.submit(DeviceIdentity(made.id, made.key), readings))
    async with viewer_in_process(runtime, cookie=operator_cookie, key=made.key) as viewer:
        history = await viewer.catch_up(t0 + 39)
    assert [(r[1], r[0]) for r in history] == [(k, t0 + i) for i in range(40, 50) for k in ("a", "b")]


@pytest.mark.serial
async def test_history_and_live_stitch_without_gap_or_duplicate(live_hub, make_device, operator_cookie):
    """Viewers join while a device streams: history + live equals a fresh query, each reading once."""
    device = await sync_to_async(make_device)()
    t0 = now_ms() - 100_000
    frames = [[{"ts": t0 + f * 10 + i, "values": {"v": f}} for i in range(10)] for f in range(300)]
    since = t0 - 1  # viewers that have nothing yet: everything, from history or live, exactly once
    views: list[list[tuple[str, int]]] = []
    # Viewers join at points of the stream: once these frames are acked (committed, fanned out).
    joins = {frame: asyncio.Event() for frame in (15, 60, 130, 260)}

    def handled(frame: Handled) -> None:
        if frame.frame in joins:
            joins[frame.frame].set()

    async def viewer(joined: asyncio.Event) -> None:
        await joined.wait()
        got: list[tuple[str, int]] = []
        views.append(got)
        async with ViewerClient.connect(live_hub.ws, cookie=operator_cookie, key=device.key) as stream:
            got.extend((r[1], r[0]) for r in await stream.catch_up(since))
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(3):
                    async for readings in stream.readings():
                        got.extend((r[1], r[0]) for r in readings)

    sender = asyncio.create_task(send_frames(live_hub, device.token, frames, pace=0.003, on_handled=handled))
    await asyncio.gather(sender, *(viewer(joined) for joined in joins.values()))
    expected = await stored_after(device.id, since)
    assert len(expected) == 3000
    for got in views:
        assert len(got) == len(set(got)), "no duplicate"
        assert sorted(got) == expected, "no gap"


@pytest.mark.serial
@pytest.mark.hub_settings(HUB_STREAM_STALL_SECONDS=2)
async def test_a_viewer_that_stops_reading_is_closed_and_others_are_unaffected(
    live_hub, make_device, operator_cookie, settings
):
    """A viewer whose socket takes nothing for HUB_STREAM_STALL_SECONDS is closed with 4008; one reading beside
    it gets every reading."""
    device = await sync_to_async(make_device)()
    headers = {"Cookie": operator_cookie, "Origin": live_hub.http}
    host, port = live_hub.http.removeprefix("http://").split(":")
    path = f"/ws/v1/devices/{device.key}/stream"
    silent, response = await asyncio.to_thread(rawws.silent_handshake, host, int(port), path, headers)
    assert response.startswith("HTTP/1.1 101")
    silent.sendall(rawws.frame(0x1, orjson.dumps({"since": now_ms()})))  # and from now on it reads nothing
    received: list[int] = []

    async def read_all(stream: ViewerClient) -> None:
        async for readings in stream.readings():
            received.extend(r[0] for r in readings)

    t0 = now_ms() - 86_400_000  # a day back: room for a million readings a millisecond apart
    async with ViewerClient.connect(live_hub.ws, cookie=operator_cookie, key=device.key) as good:
        await good.catch_up(now_ms())
        task = asyncio.create_task(read_all(good))
        broadcaster = live_hub.runtime.streams.broadcaster
        assert all(stream.outbox.writes_frames for stream in broadcaster._streams()), "the server's frame writes"
        # Text readings until the silent viewer is closed: however much the kernel buffers for a socket that
        # reads nothing (megabytes on loopback), the hub's sends to it stall once that is full.
        sent, started = 0, time.monotonic()
        while len(broadcaster) == 2 and time.monotonic() - started < 60:
            frames = [
                [{"ts": t0 + sent + f * 600 + i, "values": {"x": "y" * 60}} for i in range(600)] for f in range(8)
            ]
            await send_frames(live_hub, device.token, frames)
            sent += 8 * 600
        assert len(broadcaster) == 1, "the silent viewer was closed; the reading one still follows"
        await eventually(lambda: len(received) == sent, timeout=60, what="the reading viewer to get everything")
        task.cancel()
    # The silent viewer, once it reads again, finds its socket closed with 4008 (too slow).
    silent.settimeout(10)
    assert await asyncio.to_thread(rawws.close_code_blocking, silent) == 4008
    silent.close()


async def test_a_stream_whose_readings_the_publisher_shed_is_told_to_catch_up(runtime, make_device, operator_cookie):
    """When the publisher fell too far behind and dropped a device's committed readings, that device's open
    streams are closed with 4011, so their browsers reconnect with `since` and fetch them from the database."""
    device = await sync_to_async(make_device)()
    async with viewer_in_process(runtime, cookie=operator_cookie, key=device.key) as stream:
        await stream.catch_up(now_ms())
        await runtime.publisher.shed({DeviceIdentity(device.id, device.key)})
        async with asyncio.timeout(5):
            assert await stream.closed() == 4011
