"""Simulated devices: each streams readings over the WebSocket ingest and resends what was not acked.

Used by `manage.py simulate` (against any hub URL and token set) and by `manage.py demo`.
"""

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
import websockets

from core.epoch import now_ms
from ingest.client import DeviceClient, Handled, ProtocolViolation

logger = logging.getLogger(__name__)


@dataclass
class SimStats:
    sent: int = 0
    acked: int = 0
    errors: int = 0
    reconnects: int = 0
    started: float = field(default_factory=time.monotonic)

    def handled(self, handled: Handled) -> None:
        if handled.error is None:
            self.acked += 1
        else:
            self.errors += 1


def _reading(phase: float, now_ms: int) -> dict:
    t = now_ms / 1000
    return {
        "ts": now_ms,
        "values": {
            "temperature": round(21 + 3 * math.sin(t / 30 + phase) + random.gauss(0, 0.2), 3),  # noqa: S311
            "humidity": round(45 + 10 * math.sin(t / 90 + phase), 2),
            "voltage": round(3.3 + random.gauss(0, 0.02), 4),  # noqa: S311
            "state": "ok" if math.sin(t / 20 + phase) > -0.9 else "check",
        },
    }


async def simulate_device(base_url: str, token: str, *, rate: float, stats: SimStats, stop: asyncio.Event) -> None:
    """Send `rate` messages/s until `stop`; what was not acked is sent again after a reconnect."""
    phase = random.random() * 6.28  # noqa: S311
    unacked: list[str] = []
    backoff = 0.5
    while not stop.is_set():
        client: DeviceClient | None = None
        try:
            async with DeviceClient.connect(base_url, token, on_handled=stats.handled, open_timeout=10) as client:
                backoff = 0.5
                for message in unacked:
                    await client.send(message)
                while not stop.is_set():
                    await client.send(orjson.dumps(_reading(phase, now_ms())).decode())
                    stats.sent += 1
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), 1 / rate)
        except (OSError, websockets.WebSocketException, ProtocolViolation) as exc:
            stats.reconnects += 1
            logger.debug("simulator: %s; reconnecting in %.1fs", exc, backoff)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)  # the reconnect backoff, cut short by `stop`
            backoff = min(backoff * 2, 10)
        finally:
            if client is not None:
                unacked = client.unacked()


def status_line(stats: SimStats, devices: int) -> str:
    elapsed = max(time.monotonic() - stats.started, 1e-9)
    return (
        f"simulate: {devices} devices, sent {stats.sent} ({stats.sent / elapsed:.1f}/s), "
        f"acked {stats.acked} ({stats.acked / elapsed:.1f}/s), errors {stats.errors}, reconnects {stats.reconnects}"
    )


async def run_simulation(
    base_url: str,
    tokens: list[str],
    *,
    rate: float,
    stop: asyncio.Event,
    report_every: float = 5.0,
    report: Callable[[SimStats], None] | None = None,
) -> SimStats:
    """Run one simulated device per token until `stop`; every `report_every` s call `report` (default: print
    a status line)."""
    stats = SimStats()
    report = report or (lambda s: print(status_line(s, len(tokens)), flush=True))
    tasks = [asyncio.create_task(simulate_device(base_url, t, rate=rate, stats=stats, stop=stop)) for t in tokens]
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), report_every)
        report(stats)
    await asyncio.gather(*tasks, return_exceptions=True)
    return stats
