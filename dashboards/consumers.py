"""Dashboard stream: a logged-in operator's WebSocket subscribed to one device's group."""

import orjson
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from devices.models import Device
from ingest.fanout import ReadingsBatch, device_group

WS_4401_UNAUTHENTICATED = 4401
WS_4404_UNKNOWN_DEVICE = 4404


class DeviceStreamConsumer(AsyncWebsocketConsumer):
    """`/ws/v1/devices/<KEY>/stream`: forwards the device's committed readings live."""

    group: str | None = None

    async def connect(self) -> None:
        await self.accept()  # accept first so the browser sees the close code
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=WS_4401_UNAUTHENTICATED)
            return
        key = self.scope["url_route"]["kwargs"]["key"]
        if not await database_sync_to_async(Device.objects.filter(key=key).exists)():
            await self.close(code=WS_4404_UNKNOWN_DEVICE)
            return
        self.group = device_group(key)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.send(text_data=orjson.dumps({"type": "subscribed", "device": key}).decode())

    async def disconnect(self, code: int) -> None:
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def readings_batch(self, message: ReadingsBatch) -> None:
        payload = {"type": "readings", "device": message["device"], "readings": message["readings"]}
        await self.send(text_data=orjson.dumps(payload).decode())
