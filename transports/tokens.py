"""Device tokens as the HTTP ingest path checks them: a process-local cache of token → device, so a device that
posts every second costs one database lookup per HUB_TOKEN_RECHECK_SECONDS, not one per request. A rotated or
deleted device's token stops working here within that time, as its open sockets are closed within it
(transports/revocation.py); a device the writer finds deleted is forgotten at once."""

import time

from devices.services import DeviceIdentity, device_authenticate
from devices.tokens import token_hash

MAX_CACHED = 100_000  # devices: about 20 MB at most; the oldest entries make room


class DeviceTokens:
    def __init__(self, recheck_seconds: float) -> None:
        self._recheck = recheck_seconds
        self._known: dict[str, tuple[DeviceIdentity, float]] = {}  # token hash → device, checked at

    async def device(self, token: str) -> DeviceIdentity | None:
        if not token or len(token) > 256:
            return None
        hashed = token_hash(token)
        known = self._known.get(hashed)
        if known is not None and time.monotonic() - known[1] < self._recheck:
            return known[0]
        device = await device_authenticate(token=token)
        self._known.pop(hashed, None)
        if device is not None:
            if len(self._known) >= MAX_CACHED:
                del self._known[next(iter(self._known))]
            self._known[hashed] = (device, time.monotonic())
        return device

    def forget(self, device: DeviceIdentity) -> None:
        self._known.pop(device.token_hash, None)
