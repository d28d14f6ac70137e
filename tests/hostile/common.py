"""What the hostile tests share: counting what was stored, checking the hub still serves, its address."""

import orjson
import websockets
from asgiref.sync import sync_to_async

from storage.models import Reading


@sync_to_async
def stored(device_id: int) -> int:
    return Reading.objects.filter(device_id=device_id).count()


async def still_serving(hub, token: str) -> None:
    """Another connection gets its reading acked: the hub kept serving."""
    async with websockets.connect(f"{hub.ws}/ws/v1/{token}/telemetry") as ws:
        await ws.send('{"alive": 1}')
        assert orjson.loads(await ws.recv()) == {"ack": 1}


def hub_address(hub) -> tuple[str, int]:
    host, port = hub.http.removeprefix("http://").split(":")
    return host, int(port)
