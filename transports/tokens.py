"""Device tokens as the HTTP ingest path checks them: a process-local cache of token → device, so a device that
posts every second costs one database lookup per HUB_TOKEN_RECHECK_SECONDS, not one per request. A rotated or
deleted device's token stops working here within that time, as its open sockets are closed within it
(transports/revocation.py), and at once when the change is made by a process of the hub: the registry's signal
reaches this process's cache directly, and the others' over the channel layer (hub/runtime.py).

Each entry is rechecked after a random 80-100 % of that time, and the requests of a device that arrive while its
token is being looked up wait for that one lookup: the lookups run one at a time on the ORM's thread, and a fleet
cached in the same second came due in the same second, holding every post behind them (issue 26: HTTP ingest's
p99 was 100-200 ms at 64 connections while its median was 15 ms)."""

import asyncio
import random
import time
from collections.abc import Iterable

from devices.services import DeviceIdentity, device_authenticate
from devices.tokens import token_hash

MAX_CACHED = 100_000  # devices: about 20 MB at most; the oldest entries make room


class DeviceTokens:
    def __init__(self, recheck_seconds: float) -> None:
        self._recheck = recheck_seconds
        self._known: dict[str, tuple[DeviceIdentity, float]] = {}  # token hash → device, recheck due at
        self._hashes: dict[str, str] = {}  # device key → the token hash cached for it
        self._looking: dict[str, asyncio.Future[DeviceIdentity | None]] = {}  # token hash → its lookup under way

    async def device(self, token: str) -> DeviceIdentity | None:
        if not token or len(token) > 256:
            return None
        hashed = token_hash(token)
        known = self._known.get(hashed)
        if known is not None and time.monotonic() < known[1]:
            return known[0]
        looking = self._looking.get(hashed)
        if looking is None:
            looking = self._looking[hashed] = asyncio.ensure_future(self._look_up(token, hashed))
            looking.add_done_callback(_retrieved)  # its error is reported to whoever still waits, if anyone
        return await asyncio.shield(looking)  # one caller leaving does not cancel the others' lookup

    async def _look_up(self, token: str, hashed: str) -> DeviceIdentity | None:
        try:
            device = await device_authenticate(token=token)
        finally:
            self._looking.pop(hashed, None)
        self._known.pop(hashed, None)
        if device is not None:
            if len(self._known) >= MAX_CACHED:
                oldest = next(iter(self._known))  # the first cached: dicts keep insertion order
                self._hashes.pop(self._known.pop(oldest)[0].key, None)
            due = time.monotonic() + self._recheck * random.uniform(0.8, 1.0)  # noqa: S311 - spreading, not a secret
            self._known[hashed] = (device, due)
            self._hashes[device.key] = hashed
        return device

    def forget(self, device: DeviceIdentity) -> None:
        self._known.pop(device.token_hash, None)
        self._hashes.pop(device.key, None)

    def forget_keys(self, keys: Iterable[str]) -> None:
        """These devices' tokens changed (rotated, deleted): ask the database again next time. Safe from any thread
        (the registry's signal comes from the thread that committed the change)."""
        for key in keys:
            hashed = self._hashes.pop(key, None)
            if hashed is not None:
                self._known.pop(hashed, None)


def _retrieved(looking: asyncio.Future[DeviceIdentity | None]) -> None:
    if not looking.cancelled():
        looking.exception()
