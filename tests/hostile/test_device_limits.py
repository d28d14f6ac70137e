"""What one device may take: its rate, its keys, the process's connections."""

import asyncio
import html
import re
import time

import httpx
import orjson
import pytest
import websockets
from asgiref.sync import sync_to_async

from clients.device import DeviceClient
from core.epoch import now_ms
from devices.services import DeviceIdentity
from ingest.parsing import ErrorCode, IngestError
from tests.conftest import served_hub
from tests.hostile.common import still_serving, stored
from tests.ledger import bystanders
from tests.waiting import eventually

pytestmark = pytest.mark.usefixtures("postgres")


@pytest.fixture
def rate_limited(settings):
    """100 readings/s per device, burst 100 (read when the hub starts)."""
    settings.HUB_DEVICE_RATE_LIMIT = 100
    settings.HUB_DEVICE_RATE_BURST = 100


async def test_rate_limit_refuses_the_excess_of_one_device_only(rate_limited, live_hub, make_device):
    """Over the per-device rate: an error frame (WebSocket) or 429 (HTTP), not stored; others unaffected."""
    noisy, quiet = [await sync_to_async(make_device)() for _ in range(2)]
    t0 = now_ms() - 60_000
    batch = orjson.dumps([{"ts": t0 + i, "values": {"x": i}} for i in range(80)]).decode()
    async with websockets.connect(f"{live_hub.ws}/ws/v1/{noisy.token}/telemetry") as ws:
        await ws.send(batch)
        assert orjson.loads(await ws.recv()) == {"ack": 1}
        await ws.send(batch)  # 80 more within the same instant: over the 100-reading bucket
        reply = orjson.loads(await ws.recv())
        assert reply["error"]["code"] == "rate_limited" and reply["error"]["frame"] == 2
    async with httpx.AsyncClient(base_url=live_hub.http) as client:
        response = await client.post(f"/api/v1/{noisy.token}/telemetry", content=batch)
        assert response.status_code == 429
        assert (await client.post(f"/api/v1/{quiet.token}/telemetry", content=batch)).status_code == 200
    assert await stored(noisy.id) == 80
    assert await stored(quiet.id) == 80


async def test_a_device_is_held_to_its_key_budget_and_its_pages_stay_fast(live_hub, make_device, operator_cookie):
    """Finding 6: a device sending 30 frames of 1,000 new keys gets its first 1,000 keys (the default
    HUB_MAX_KEYS_PER_DEVICE) and `too_many_keys` naming the first new key after that; readings of keys it has
    go on; and at the limit its device page, history page, history API and the fleet page each answer within 1 s."""
    device, ws_good, http_good = [await sync_to_async(make_device)() for _ in range(3)]
    t0 = now_ms() - 3_600_000
    async with (
        bystanders(live_hub, (ws_good.key, ws_good.token), (http_good.key, http_good.token)) as seen,
        DeviceClient.connect(live_hub.ws, device.token) as client,
    ):
        for frame in range(30):
            values = {f"k{frame}-{i}": i for i in range(1000)}
            await client.send(orjson.dumps({"ts": t0 + frame, "values": values}).decode())
        for step in range(1, 10):  # the 1,000 keys it has, again and again
            await client.send(
                orjson.dumps({"ts": t0 + 1000 + step, "values": {f"k0-{i}": i for i in range(1000)}}).decode()
            )
        await asyncio.wait_for(client.all_acked(), 30)
    assert sorted(client.errors) == list(range(2, 31))
    assert client.errors[2]["code"] == "too_many_keys" and client.errors[2]["key"] == "k1-0", client.errors[2]
    await seen.unharmed()
    assert await stored(device.id) == 10_000
    timings: dict[str, float] = {}
    async with httpx.AsyncClient(base_url=live_hub.http, headers={"Cookie": operator_cookie}, timeout=30) as web:
        for name, path in {
            "device page": f"/devices/{device.key}/",
            "history page": f"/devices/{device.key}/history/",
            "history API, limit=1": f"/api/v1/devices/{device.key}/telemetry?limit=1",
            "history API, AVG": f"/api/v1/devices/{device.key}/telemetry?agg=AVG&start={t0 - 1}&end={t0 + 2000}",
            "fleet page": "/",
        }.items():
            started = time.monotonic()
            response = await web.get(path)
            timings[name] = round(time.monotonic() - started, 3)
            assert response.status_code == 200, (name, response.text[:300])
            if name == "history page":  # and what its chart and its CSV link ask for
                csv = html.unescape(re.search(r'href="([^"]*telemetry\.csv\?[^"]*)"', response.text)[1])
                for what, url in (("history chart", csv.replace("telemetry.csv", "telemetry")), ("CSV", csv)):
                    started = time.monotonic()
                    answer = await web.get(url)
                    timings[what] = round(time.monotonic() - started, 3)
                    assert answer.status_code == 200, (what, answer.text[:300])
    print(f"at 1,000 keys: {timings} s")
    assert max(timings.values()) < 1.0, timings


async def test_a_connection_flood_is_refused_past_the_limit(transactional_db, make_device, settings):
    """Past HUB_MAX_CONNECTIONS new WebSockets get 503; existing ones keep working."""
    device = await sync_to_async(make_device)()
    settings.HUB_MAX_CONNECTIONS = 3
    async with served_hub() as hub:
        url = f"{hub.ws}/ws/v1/{device.token}/telemetry"
        async with websockets.connect(url) as a, websockets.connect(url), websockets.connect(url):
            with pytest.raises(websockets.InvalidStatus) as refused:
                async with websockets.connect(url):
                    pass
            assert refused.value.response.status_code == 503
            await a.send('{"x": 1}')
            assert orjson.loads(await a.recv()) == {"ack": 1}
        cap = hub.app.router.application_mapping["websocket"]
        await eventually(lambda: cap.open == 0, what="closed sockets to leave the count")
        await still_serving(hub, device.token)


@pytest.mark.hub_settings(HUB_MAX_KEYS_PER_DEVICE=3, HUB_DEVICE_RATE_LIMIT=2, HUB_DEVICE_RATE_BURST=2)
async def test_a_message_the_rate_limit_refuses_uses_none_of_the_key_budget(runtime, make_device):
    """Issue 22: a message refused for its rate stores nothing, so its new keys count against nothing either: once
    the bucket refills, keys within the budget are taken (before, the refused keys had used it up)."""
    made = await sync_to_async(make_device)()
    device = DeviceIdentity(made.id, made.key)
    ingest = runtime.ingest
    await (await ingest.message(device=device, body='{"a": 1}', transport="ws"))  # keys {a}; one token left
    with pytest.raises(IngestError) as refused:
        await ingest.message(device=device, body='{"b": 1, "c": 2}', transport="ws")  # two readings, one token
    assert refused.value.code == ErrorCode.RATE_LIMITED
    await asyncio.sleep(1.1)  # the bucket refills (2 readings/s): the scenario, not a wait for an event
    await (await ingest.message(device=device, body='{"d": 1, "e": 2}', transport="ws"))  # {a, d, e}: 3 of 3
    with pytest.raises(IngestError) as over:
        await ingest.message(device=device, body='{"f": 1}', transport="ws")
    assert over.value.code == ErrorCode.TOO_MANY_KEYS
