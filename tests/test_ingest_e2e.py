"""WebSocket and HTTP ingest end to end: real uvicorn, PostgreSQL, Redis and a real WebSocket client."""

import asyncio

import httpx
import orjson
import pytest
from asgiref.sync import sync_to_async

from clients.device import DeviceClient
from clients.viewer import ViewerClient
from core.epoch import now_ms
from storage.models import LatestValue, Reading
from tests.waiting import eventually

pytestmark = [pytest.mark.serial, pytest.mark.usefixtures("postgres", "redis"), pytest.mark.engines]

DEVICES = 10
READINGS = 1000
PER_FRAME = 50


def base_ts() -> int:
    return now_ms() - 60_000


def frames_for(ts0: int) -> list[str]:
    """READINGS readings of key `t` as frames of PER_FRAME timestamped objects."""
    return [
        orjson.dumps([{"ts": ts0 + i, "values": {"t": float(i)}} for i in range(start, start + PER_FRAME)]).decode()
        for start in range(0, READINGS, PER_FRAME)
    ]


async def send_and_collect_acks(hub, token: str, frames: list[str]) -> int:
    """Send every frame, return the highest cumulative ack once all frames are acked (the client fails on
    an ack that does not increase or covers a frame not sent)."""
    async with DeviceClient.connect(hub.ws, token) as client:
        for frame in frames:
            await client.send(frame)
        async with asyncio.timeout(30):
            await client.all_acked()
        assert not client.errors, client.errors
        return client.acked_upto


async def watch(hub, cookie: str, key: str, expected: int, seen: dict[str, set]) -> None:
    async with ViewerClient.connect(hub.ws, cookie=cookie, key=key) as viewer:
        await viewer.catch_up(now_ms())
        seen[key] = set()
        async for readings in viewer.readings():
            seen[key].update((ts, k) for ts, k, _v in readings)
            if len(seen[key]) >= expected:
                return


@sync_to_async
def stored(device_id: int) -> int:
    return Reading.objects.filter(device_id=device_id).count()


async def test_websocket_readings_are_acked_stored_once_and_fanned_out(live_hub, make_device, operator_cookie):
    """10 devices x 1,000 readings: every frame acked, every reading stored once and delivered live."""
    devices = [await sync_to_async(make_device)() for _ in range(DEVICES)]
    ts0 = base_ts()
    seen: dict[str, set] = {}
    watchers = [asyncio.create_task(watch(live_hub, operator_cookie, d.key, READINGS, seen)) for d in devices]
    await eventually(lambda: len(seen) == DEVICES, what="every watcher subscribed")
    frames = frames_for(ts0)
    acks = await asyncio.gather(*(send_and_collect_acks(live_hub, d.token, frames) for d in devices))
    assert acks == [len(frames)] * DEVICES
    for d in devices:
        assert await stored(d.id) == READINGS
    async with asyncio.timeout(20):
        await asyncio.gather(*watchers)
    assert all(len(seen[d.key]) == READINGS for d in devices)

    # Resending everything (a device that lost its acks) stores nothing twice.
    await send_and_collect_acks(live_hub, devices[0].token, frames)
    assert await stored(devices[0].id) == READINGS


async def test_http_readings_are_stored_once_after_200(live_hub, make_device):
    """HTTP POST answers 200 only after commit; a resent body is stored once."""
    devices = [await sync_to_async(make_device)() for _ in range(DEVICES)]
    ts0 = base_ts()
    frames = frames_for(ts0)
    async with httpx.AsyncClient(base_url=live_hub.http, timeout=30) as client:

        async def post_all(token: str) -> list[int]:
            return [(await client.post(f"/api/v1/{token}/telemetry", content=f)).status_code for f in frames]

        statuses = await asyncio.gather(*(post_all(d.token) for d in devices))
        assert all(s == 200 for per_device in statuses for s in per_device)
        for d in devices:
            assert await stored(d.id) == READINGS
        assert await post_all(devices[0].token) == [200] * len(frames)
    assert await stored(devices[0].id) == READINGS
    latest = await sync_to_async(LatestValue.objects.get)(device_id=devices[0].id, key="t")
    assert latest.value == float(READINGS - 1)
