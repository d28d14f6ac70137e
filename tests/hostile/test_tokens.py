"""Device tokens: a rotated one disconnects its sockets within seconds, and none ever reaches a log."""

import asyncio
import contextlib
import time

import httpx
import orjson
import pytest
import websockets
from asgiref.sync import sync_to_async
from channels.testing.websocket import WebsocketCommunicator

from devices.models import Device
from devices.services import device_token_rotate
from tests.conftest import database_url_for_tests
from tests.inprocess import in_process, in_process_client
from tests.ledger import bystanders

pytestmark = pytest.mark.usefixtures("postgres")


@pytest.fixture
def fast_recheck(settings):
    settings.HUB_TOKEN_RECHECK_SECONDS = 0.2


async def test_a_connected_device_is_disconnected_when_its_token_is_rotated(fast_recheck, live_hub, make_device):
    device = await sync_to_async(make_device)()
    async with websockets.connect(f"{live_hub.ws}/ws/v1/{device.token}/telemetry") as ws:
        await ws.send('{"x": 1}')
        assert orjson.loads(await ws.recv()) == {"ack": 1}
        await sync_to_async(device_token_rotate)(key=device.key)
        started = time.monotonic()
        with pytest.raises(websockets.ConnectionClosed) as closed:
            async with asyncio.timeout(5):
                await ws.recv()
        assert closed.value.rcvd.code == 4403
        assert time.monotonic() - started < 3


async def test_no_token_reaches_the_logs_of_a_hostile_run(make_device, hub_process):
    """Finding 5: a hub logging at DEBUG is sent tokens in every path a device (or a prober) might use: ThingsBoard's
    attributes and rpc paths, other cases and versions, 404s, WebSockets, refused bodies. Its whole log holds none of
    the tokens (nor those of two devices sending beside it), though it logs each request (the token as ***)."""
    devices = [await sync_to_async(make_device)() for _ in range(4)]
    unknown = "unknown-TOKEN-0123456789abcdefgh"  # a token's shape (32 characters), of no device
    tokens = [d.token for d in devices] + [unknown]
    hub = await hub_process(HUB_DATABASE_URL=database_url_for_tests(), HUB_LOG_LEVEL="DEBUG").start().ready()
    seen = bystanders(hub, (devices[2].key, devices[2].token), (devices[3].key, devices[3].token))
    paths = ["/api/v1/{}/telemetry", "/api/v1/{}/attributes", "/api/v1/{}/rpc?timeout=50", "/api/v1/{}/Telemetry",
             "/API/v1/{}/telemetry", "/api/v2/{}/telemetry", "/api/v1/{}", "/api/v1/{}/telemetry?x=1",
             "/api/v1//{}/telemetry", "/api/v1/./{}/telemetry", "/api/v1/devices/{}/telemetry",
             "/devices/{}/", "/api/v1/telemetry?token={}"]  # fmt: skip
    async with seen as seen, httpx.AsyncClient(base_url=hub.http) as client:
        for token in tokens[:2] + [unknown]:
            for path in paths:
                await client.post(path.format(token), content=b'{"x": 1}')
                await client.get(path.format(token))
            await client.post(f"/api/v1/{token}/telemetry", content=b"x" * 70_000)  # 413
            await client.post(f"/api/v1/{token}/telemetry", content=b"{not json")  # 400
            for path in ("/ws/v1/{}/telemetry", "/ws/v1/{}/attributes", "/WS/v1/{}/telemetry", "/ws/v1//{}/telemetry"):
                with contextlib.suppress(websockets.InvalidStatus):
                    async with websockets.connect(f"{hub.ws}{path.format(token)}") as ws:
                        await ws.send("{bad")
                        await ws.recv()
    await seen.unharmed()
    hub.stop()
    log = hub.log.read_text()
    assert log.count("/api/v1/***/attributes") >= 6 and "/ws/v1/***/attributes" in log, log[-3000:]
    leaked = [token for token in tokens if token in log]
    assert leaked == [], [line for line in log.splitlines() if any(t in line for t in leaked)][:5]


@pytest.mark.hub_settings(HUB_WRITER_FLUSH_MS=400, HUB_WRITER_FLUSH_WHEN_IDLE=False)
async def test_a_device_deleted_while_it_sends_is_told_its_token_is_gone(runtime, make_device):
    """Issue 22: readings in flight when their device is deleted are refused as its token now is: HTTP 401 (not a
    500 inviting a retry) and the socket closed with 4403 (not 1011). Flushes wait 400 ms here: the deletion lands
    while the readings wait for theirs."""
    http_device, ws_device = [await sync_to_async(make_device)() for _ in range(2)]
    socket = WebsocketCommunicator(in_process(runtime), f"/ws/v1/{ws_device.token}/telemetry")
    assert (await socket.connect())[0]
    async with in_process_client(runtime) as client:
        posted = asyncio.create_task(client.post(f"/api/v1/{http_device.token}/telemetry", content=b'{"x": 1}'))
        await socket.send_to(text_data='{"x": 1}')
        await asyncio.sleep(0.1)  # both are queued for the next flush
        await sync_to_async(Device.objects.filter(id__in=[http_device.id, ws_device.id]).delete)()
        answer = await asyncio.wait_for(posted, 10)
    assert answer.status_code == 401 and answer.json()["error"]["code"] == "unauthorized", answer.text
    assert await socket.receive_output(10) == {"type": "websocket.close", "code": 4403}


async def test_a_devices_concurrent_posts_wait_for_one_token_lookup_and_rechecks_are_spread(make_device, monkeypatch):
    """A fleet cached in one second must not come due in one second (the lookups run one at a time on the ORM's
    thread), and a device's posts that arrive while its token is looked up wait for that lookup, not one each."""
    from transports import tokens as module

    devices = [await sync_to_async(make_device)() for _ in range(30)]
    lookups: list[str] = []
    real = module.device_authenticate

    async def counted(*, token: str):
        lookups.append(token)
        return await real(token=token)

    monkeypatch.setattr(module, "device_authenticate", counted)
    cache = module.DeviceTokens(recheck_seconds=10.0)
    found = await asyncio.gather(*(cache.device(d.token) for d in devices for _ in range(8)))
    assert len(lookups) == len(devices), "one lookup per device, however many of its posts were waiting"
    assert [f.key for f in found] == [d.key for d in devices for _ in range(8)]
    assert await cache.device("not-a-token") is None
    assert await cache.device(devices[0].token) is found[0] and len(lookups) == len(devices) + 1

    due = sorted(entry[1] for entry in cache._known.values())
    assert due[-1] - due[0] > 0.5, "rechecks come due over 80-100 % of the interval, not at once"
    assert due[0] - time.monotonic() > 7.0
