"""Bounded polling for tests: wait for a condition, never a bare sleep."""

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def eventually(condition: Callable[[], bool | Awaitable[bool]], *, timeout: float = 10.0, what: str = "") -> None:
    """Poll `condition` (sync or async) until it holds; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        await asyncio.sleep(0.02)  # the polling interval


async def group_ready(layer: Any, group: str, channel: str, *, timeout: float = 10.0) -> None:
    """Return once `channel` of `layer` receives what is sent to `group`: its subscription reached Redis.

    Sends numbered probes through the layer until one comes back; pub/sub keeps order, so receiving the
    latest probe also drains the earlier ones still on their way.
    """
    async with asyncio.timeout(timeout):
        for probe in itertools.count(1):
            await layer.group_send(group, {"type": "probe", "probe": probe})
            try:
                async with asyncio.timeout(0.05):
                    while (await layer.receive(channel)).get("probe") != probe:
                        pass  # an earlier probe, late: drained
                return
            except TimeoutError:
                continue  # the subscription was not in place for this probe: send another


class Gate:
    """Holds whoever awaits `wait()` until `open()`; `waiting` counts who is held now, for tests to wait on."""

    def __init__(self) -> None:
        self._opened = asyncio.Event()
        self.waiting = 0

    async def wait(self) -> None:
        self.waiting += 1
        try:
            await self._opened.wait()
        finally:
            self.waiting -= 1

    def open(self) -> None:
        self._opened.set()

    def close(self) -> None:
        self._opened.clear()
