"""Simulated devices: each streams readings over the WebSocket ingest and resends what was not acked.

Used by `manage.py simulate` (against any hub URL and token set) and by `manage.py demo`, which also back-fills
their past (`history_backfill`) from the same signal, so history and live readings join: a temperature around
21 °C with a slow swing, noise and, now and then, an excursion of several degrees for a minute or two.
"""

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import orjson
import websockets

from clients.device import DeviceClient, Handled, ProtocolViolation
from core.epoch import now_ms
from devices.services import DeviceIdentity
from ingest.parsing import Reading
from ingest.writer import Writer

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


EXCURSION_SLOT_S = 600  # at most one excursion per device per 10 minutes…
EXCURSION_CHANCE = 0.5  # …in about half of them


def excursion(phase: float, t: float) -> float:
    """Degrees an excursion adds at `t` (s): a hump of 8-12 °C lasting 40-150 s, in some slots only. A pure
    function of the device's phase and the time, so the back-filled past and the live readings agree."""
    slot = int(t // EXCURSION_SLOT_S)
    draw = random.Random(f"{phase:.6f}/{slot}")  # noqa: S311 - a simulation, not a secret
    if draw.random() > EXCURSION_CHANCE:
        return 0.0
    start = slot * EXCURSION_SLOT_S + draw.uniform(0, EXCURSION_SLOT_S - 160)
    length, height = draw.uniform(40, 150), draw.uniform(8, 12)
    return height * math.sin(math.pi * (t - start) / length) if start <= t < start + length else 0.0


def simulated_values(phase: float, ts_ms: int) -> dict[str, float | str]:
    """One device's values at `ts_ms`."""
    t = ts_ms / 1000
    warm = excursion(phase, t)
    return {
        "temperature": round(21 + 3 * math.sin(t / 900 + phase) + warm + random.gauss(0, 0.2), 3),  # noqa: S311
        "humidity": round(45 + 10 * math.sin(t / 5400 + phase) - warm, 2),
        "voltage": round(3.3 + random.gauss(0, 0.02), 4),  # noqa: S311
        "state": "hot" if warm > 5 else "ok",
    }


def _reading(phase: float, now_ms: int) -> dict:
    return {"ts": now_ms, "values": simulated_values(phase, now_ms)}


def device_phase(key: str) -> float:
    """A device's phase (radians), fixed by its key, so a restarted demo continues the same signal."""
    return random.Random(key).random() * 6.28  # noqa: S311


def simulated_history(key: str, *, start: int, end: int, step: int) -> list[Reading]:
    """The readings device `key` would have sent every `step` ms in [start, end)."""
    phase = device_phase(key)
    readings = []
    for ts in range(start - start % step + step, end, step):
        for name, value in simulated_values(phase, ts).items():
            if isinstance(value, str):
                readings.append(Reading(ts, name, None, value))
            else:
                readings.append(Reading(ts, name, value))
    return readings


async def history_backfill(
    writer: Writer,
    devices: list[DeviceIdentity],
    *,
    start: dict[str, int],
    end: int,
    progress: Callable[[int], None] = lambda n: None,
) -> int:
    """Write the simulated past of each device, from its `start` (ms) to `end`, through the writer, as a
    device's messages would be (so rollups, latest values and alerts follow): a reading a minute, every
    5 s over the last half hour. Returns the readings written; `progress` gets each committed chunk's size."""
    written = 0
    for device in devices:
        for a, b, step in _backfill_spans(start[device.key], end):
            readings = simulated_history(device.key, start=a, end=b, step=step)
            futures = [
                await writer.submit(device, readings[i : i + BACKFILL_CHUNK])
                for i in range(0, len(readings), BACKFILL_CHUNK)
            ]
            for i, future in enumerate(futures):
                await future
                progress(min(BACKFILL_CHUNK, len(readings) - i * BACKFILL_CHUNK))
            written += len(readings)
    return written


BACKFILL_DENSE_MS = 30 * 60_000
BACKFILL_CHUNK = 2_000


def _backfill_spans(start: int, end: int) -> list[tuple[int, int, int]]:
    """(from, to, step) of a device's back-fill: a message a minute, every 5 s over the last half hour."""
    recent = end - BACKFILL_DENSE_MS
    return [(a, b, step) for a, b, step in ((start, recent, 60_000), (max(start, recent), end, 5_000)) if a < b]


def backfill_size(*, start: int, end: int) -> int:
    """How many readings `history_backfill` writes for one device from `start` to `end` (a progress total)."""
    return sum(4 * len(range(a - a % step + step, b, step)) for a, b, step in _backfill_spans(start, end))


async def simulate_device(
    base_url: str, token: str, *, rate: float, stats: SimStats, stop: asyncio.Event, phase: float | None = None
) -> None:
    """Send `rate` messages/s until `stop`; what was not acked is sent again after a reconnect."""
    phase = random.random() * 6.28 if phase is None else phase  # noqa: S311
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
    phases: list[float] | None = None,
) -> SimStats:
    """Run one simulated device per token until `stop`; every `report_every` s call `report` (default: print
    a status line). `phases` fixes each device's signal (the demo's, to continue its back-filled past)."""
    stats = SimStats()
    report = report or (lambda s: print(status_line(s, len(tokens)), flush=True))
    device_phases: Sequence[float | None] = phases or [None] * len(tokens)
    tasks = [
        asyncio.create_task(simulate_device(base_url, t, rate=rate, stats=stats, stop=stop, phase=p))
        for t, p in zip(tokens, device_phases, strict=True)
    ]
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), report_every)
        report(stats)
    await asyncio.gather(*tasks, return_exceptions=True)
    return stats
