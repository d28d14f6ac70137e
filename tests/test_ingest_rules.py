"""Ingest behaviour through the real server: errors, limits, acks, duplicates, latest values, last_seen."""

import time

import httpx
import orjson
import pytest
import websockets
from asgiref.sync import sync_to_async

from core.epoch import now_ms
from devices.models import Device
from storage.models import LatestValue, Reading

pytestmark = pytest.mark.usefixtures("postgres")


@sync_to_async
def readings(device_id: int) -> list[tuple[str, int, float]]:
    rows = Reading.objects.filter(device_id=device_id).order_by("key", "ts").values_list("key", "ts", "value")
    return [(k, int(ts.timestamp() * 1000), v) for k, ts, v in rows]


@sync_to_async
def latest(device_id: int) -> dict[str, tuple[int, float | None, str | None]]:
    rows = LatestValue.objects.filter(device_id=device_id).values_list("key", "ts", "value", "text")
    return {k: (int(ts.timestamp() * 1000), v, x) for k, ts, v, x in rows}


async def recv_json(ws) -> dict:
    return orjson.loads(await ws.recv())


async def acked_up_to(ws, frame: int) -> bool:
    """Read until the cumulative ack reaches `frame`; False if an error frame arrives first."""
    while True:
        message = await recv_json(ws)
        if "error" in message:
            return False
        if message["ack"] >= frame:
            return True


async def test_a_rejected_frame_gets_an_error_and_stores_nothing(live_hub, make_device):
    """A bad frame is answered with an error naming frame, rule and key; the cumulative ack still covers it."""
    device = await sync_to_async(make_device)()
    ts = now_ms()
    async with websockets.connect(f"{live_hub.ws}/ws/v1/{device.token}/telemetry") as ws:
        await ws.send(orjson.dumps({"ts": ts, "values": {"ok": 1}}).decode())
        await ws.send(orjson.dumps({"ts": ts, "values": {"fine": 1, "bad key!": 2}}).decode())
        await ws.send(b"\x00binary")
        await ws.send(orjson.dumps({"ts": ts // 1000, "values": {"t": 1}}).decode())
        await ws.send(orjson.dumps({"ts": ts + 1, "values": {"ok": 2}}).decode())
        messages = [await recv_json(ws)]
        while messages[-1].get("ack") != 5:
            messages.append(await recv_json(ws))
    errors = {m["error"]["frame"]: m["error"] for m in messages if "error" in m}
    assert errors[2]["code"] == "invalid_key" and errors[2]["key"] == "bad key!"
    assert errors[3]["code"] == "unsupported_frame"
    assert errors[4]["code"] == "ts_unit" and "seconds" in errors[4]["message"]
    assert max(m["ack"] for m in messages if "ack" in m) == 5
    assert await readings(device.id) == [("ok", ts, 1.0), ("ok", ts + 1, 2.0)]


async def test_oversized_messages_are_refused(live_hub, make_device, settings):
    """Over the message limit: an error frame; over uvicorn's frame limit: close 1009; HTTP: 413."""
    device = await sync_to_async(make_device)()
    url = f"{live_hub.ws}/ws/v1/{device.token}/telemetry"
    just_over = '{"s": "' + "x" * settings.HUB_MAX_MESSAGE_BYTES + '"}'
    async with websockets.connect(url) as ws:
        await ws.send(just_over)
        assert (await recv_json(ws))["error"]["code"] == "payload_too_large"
        await ws.send('{"t": 1}')
        assert await acked_up_to(ws, 2)
    async with websockets.connect(url, max_size=None) as ws:
        await ws.send("x" * (settings.HUB_WS_MAX_SIZE + 1))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd.code == 1009
    async with httpx.AsyncClient(base_url=live_hub.http) as client:
        response = await client.post(f"/api/v1/{device.token}/telemetry", content=just_over)
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "payload_too_large"
        response = await client.post(f"/api/v1/{device.token}/telemetry", content='{"t": NaN}')
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "malformed_json"
    assert [k for k, _ts, _v in await readings(device.id)] == ["t"]


async def test_latest_value_is_the_newest_ts_and_duplicates_keep_the_first(live_hub, make_device):
    """Latest = newest ts, not last arrival; a repeated (device, key, ts) keeps the first value everywhere."""
    device = await sync_to_async(make_device)()
    t0 = now_ms() - 10_000
    bodies = [
        {"ts": t0 + 500, "values": {"temp": 2.0, "mode": "auto"}},
        {"ts": t0, "values": {"temp": 1.0, "mode": "manual"}},  # late: older than what is stored
        {"ts": t0 + 500, "values": {"temp": 99.0, "mode": "changed"}},  # same ts again: ignored
    ]
    async with httpx.AsyncClient(base_url=live_hub.http) as client:
        for body in bodies:
            response = await client.post(f"/api/v1/{device.token}/telemetry", content=orjson.dumps(body))
            assert response.status_code == 200, response.text
    assert await readings(device.id) == [("temp", t0, 1.0), ("temp", t0 + 500, 2.0)]
    assert await latest(device.id) == {"temp": (t0 + 500, 2.0, None), "mode": (t0 + 500, None, "auto")}


async def test_last_seen_moves_when_readings_are_committed(live_hub, make_device):
    """last_seen is the commit time of the device's latest message."""
    device = await sync_to_async(make_device)()
    before = time.time()
    async with websockets.connect(f"{live_hub.ws}/ws/v1/{device.token}/telemetry") as ws:
        await ws.send('{"t": 1}')
        assert await recv_json(ws) == {"ack": 1}
    seen = await sync_to_async(lambda: Device.objects.get(pk=device.id).last_seen)()
    assert seen is not None and before - 1 <= seen.timestamp() <= time.time() + 1
