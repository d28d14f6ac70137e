"""Device authentication on both ingest transports: no token, wrong token, rotated token."""

import httpx
import pytest
import websockets
from asgiref.sync import sync_to_async

from core.epoch import now_ms
from devices.services import device_token_rotate
from storage.models import Reading

pytestmark = pytest.mark.usefixtures("postgres")

BODY = '{"temperature": 21.5}'


async def refused_status(url: str) -> int:
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(url):
            pass
    return refused.value.response.status_code


async def test_websocket_handshake_is_refused_without_a_valid_token(live_hub, make_device):
    """No token, a wrong token, or a path that is no route: the handshake gets HTTP 403."""
    await sync_to_async(make_device)()
    assert await refused_status(f"{live_hub.ws}/ws/v1//telemetry") == 403
    assert await refused_status(f"{live_hub.ws}/ws/v1/not-a-token/telemetry") == 403
    assert await refused_status(f"{live_hub.ws}/ws/v1/nothing-here") == 403
    assert await sync_to_async(Reading.objects.count)() == 0


async def test_websocket_rotated_token_stops_working(live_hub, make_device):
    """After rotation the old token is refused and the new one is accepted."""
    device = await sync_to_async(make_device)()
    new = await sync_to_async(device_token_rotate)(key=device.key)
    assert await refused_status(f"{live_hub.ws}/ws/v1/{device.token}/telemetry") == 403
    async with websockets.connect(f"{live_hub.ws}/ws/v1/{new}/telemetry") as ws:
        await ws.send(BODY)
        assert await ws.recv() == '{"ack":1}'


async def test_http_unknown_or_rotated_token_gets_401(live_hub, make_device):
    """HTTP ingest answers 401 with a JSON error for an unknown or rotated token; nothing is stored."""
    device = await sync_to_async(make_device)()
    async with httpx.AsyncClient(base_url=live_hub.http) as client:
        wrong = await client.post("/api/v1/wrong/telemetry", content=BODY)
        assert wrong.status_code == 401
        assert wrong.json()["error"]["code"] == "unauthorized"
        first = f'{{"ts": {now_ms() - 1000}, "values": {{"t": 1}}}}'
        assert (await client.post(f"/api/v1/{device.token}/telemetry", content=first)).status_code == 200
        new = await sync_to_async(device_token_rotate)(key=device.key)
        assert (await client.post(f"/api/v1/{device.token}/telemetry", content=BODY)).status_code == 401
        assert (await client.post(f"/api/v1/{new}/telemetry", content=BODY)).status_code == 200
        assert (await client.get(f"/api/v1/{new}/telemetry")).status_code == 405
    assert await sync_to_async(Reading.objects.filter(device_id=device.id).count)() == 2
