"""The ledger: every reading gets a unique (device, ts); record what was sent and acknowledged, then compare
with the database. lost = acknowledged − stored and unexpected = stored − sent must be empty."""

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import orjson
import websockets
from asgiref.sync import sync_to_async
from django.db import connection

from tests.waiting import eventually


@dataclass
class Ledger:
    sent: dict[str, set[int]] = field(default_factory=dict)
    acked: dict[str, set[int]] = field(default_factory=dict)
    ack_times: list[float] = field(default_factory=list)

    def record_sent(self, key: str, ts: list[int]) -> None:
        self.sent.setdefault(key, set()).update(ts)

    def record_acked(self, key: str, ts: list[int]) -> None:
        self.acked.setdefault(key, set()).update(ts)
        self.ack_times.append(time.monotonic())

    async def reconcile(self) -> dict[str, int]:
        """Compare with ingest_reading; prints and returns the counts."""
        stored, duplicates = await _stored(list(self.sent))
        lost = sum(len(self.acked.get(k, set()) - stored.get(k, set())) for k in self.sent)
        unexpected = sum(len(stored.get(k, set()) - self.sent[k]) for k in self.sent)
        report = {
            "sent": sum(map(len, self.sent.values())),
            "acked": sum(map(len, self.acked.values())),
            "stored": sum(map(len, stored.values())),
            "lost": lost,
            "unexpected": unexpected,
            "duplicates": duplicates,
        }
        print(f"ledger: {report}")
        return report


@sync_to_async
def _stored(keys: list[str]) -> tuple[dict[str, set[int]], int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT d.key, (extract(epoch FROM r.ts) * 1000)::bigint FROM ingest_reading r"
            " JOIN devices_device d ON d.id = r.device_id WHERE d.key = ANY(%s)",
            [keys],
        )
        rows = cursor.fetchall()
    stored: dict[str, set[int]] = {}
    for key, ts in rows:
        stored.setdefault(key, set()).add(ts)
    return stored, len(rows) - sum(map(len, stored.values()))


def _message(ts: list[int]) -> str:
    return orjson.dumps([{"ts": t, "values": {"v": t % 1000}} for t in ts]).decode()


async def ws_device(
    base: Callable[[], str], key: str, token: str, ledger: Ledger, *, frames: int, per_frame: int, stop: asyncio.Event
) -> None:
    """Sends `frames` frames, then keeps resending unacked ones over fresh connections until all are acked
    or `stop` is set. Reconnects on any failure with a short backoff."""
    t0 = time.time_ns() // 1_000_000 - 3_600_000
    pending = [[t0 + f * per_frame + i for i in range(per_frame)] for f in range(frames)]
    while pending and not stop.is_set():
        try:
            async with websockets.connect(f"{base()}/ws/v1/{token}/telemetry", open_timeout=5) as ws:
                inflight: dict[int, list[int]] = {}
                receiver = asyncio.create_task(_acks(ws, inflight, key, ledger))
                try:
                    for frame, ts in enumerate(list(pending), start=1):
                        inflight[frame] = ts
                        ledger.record_sent(key, ts)
                        await ws.send(_message(ts))
                        await asyncio.sleep(0.002)
                    with contextlib.suppress(AssertionError):
                        await eventually(lambda inflight=inflight: not inflight or stop.is_set(), timeout=5)
                finally:
                    receiver.cancel()
                    await asyncio.gather(receiver, return_exceptions=True)  # it may have ended with the socket
                pending = [ts for ts in pending if not set(ts) <= ledger.acked.get(key, set())]
        except (OSError, websockets.WebSocketException, TimeoutError):
            pending = [ts for ts in pending if not set(ts) <= ledger.acked.get(key, set())]
            await asyncio.sleep(0.2)


async def _acks(ws, inflight: dict[int, list[int]], key: str, ledger: Ledger) -> None:
    async for raw in ws:
        message = orjson.loads(raw)
        assert "error" not in message, message
        for frame in [f for f in inflight if f <= message["ack"]]:
            ledger.record_acked(key, inflight.pop(frame))


async def http_device(
    base: Callable[[], str], key: str, token: str, ledger: Ledger, *, posts: int, per_post: int, stop: asyncio.Event
) -> None:
    """POSTs `posts` bodies, each retried until it gets 200 (or `stop`)."""
    t0 = time.time_ns() // 1_000_000 - 7_200_000
    async with httpx.AsyncClient(timeout=10) as client:
        for p in range(posts):
            ts = [t0 + p * per_post + i for i in range(per_post)]
            while not stop.is_set():
                ledger.record_sent(key, ts)
                try:
                    response = await client.post(f"{base()}/api/v1/{token}/telemetry", content=_message(ts))
                except httpx.TransportError:
                    response = None
                if response is not None and response.status_code == 200:
                    ledger.record_acked(key, ts)
                    break
                await asyncio.sleep(0.2)
            await asyncio.sleep(0.01)
