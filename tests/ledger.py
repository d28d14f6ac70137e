"""The ledger: every reading gets a unique (device, ts); record what was sent and acknowledged, then compare
with the database. lost = acknowledged − stored and unexpected = stored − sent must be empty."""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import httpx
import orjson
import websockets
from asgiref.sync import sync_to_async
from django.db import connection

from clients.device import DeviceClient, Handled
from core.epoch import now_ms


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

    def acker(self, key: str, numbered: dict[int, list[int]]) -> Callable[[Handled], None]:
        """A DeviceClient's `on_handled`: records the ts of each committed frame (`numbered`: frame -> ts)."""

        def handled(frame: Handled) -> None:
            if frame.error is None:
                self.record_acked(key, numbered[frame.frame])

        return handled

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
    t0 = now_ms() - 3_600_000

    async def batches() -> AsyncIterator[list[int]]:
        for f in range(frames):
            yield [t0 + f * per_frame + i for i in range(per_frame)]
            await asyncio.sleep(0.002)  # pace: the load lasts a while, so a fault can land in the middle of it

    await _resending(base, key, token, ledger, batches(), give_up=stop)


async def paced_ws_device(
    base: Callable[[], str], key: str, token: str, ledger: Ledger, *, per_frame: int, every: float, until: asyncio.Event
) -> None:
    """A frame of `per_frame` readings every `every` s until `until`; then waits for every ack. Like a real
    device it reconnects and resends what was not acked."""
    next_ts = now_ms() - 3_600_000

    async def batches() -> AsyncIterator[list[int]]:
        nonlocal next_ts
        while not until.is_set():
            yield [next_ts + i for i in range(per_frame)]
            next_ts += per_frame
            await asyncio.sleep(every)  # pace: a device sending at its own rate

    await _resending(base, key, token, ledger, batches(), give_up=asyncio.Event())


async def _resending(
    base: Callable[[], str],
    key: str,
    token: str,
    ledger: Ledger,
    batches: AsyncIterator[list[int]],
    *,
    give_up: asyncio.Event,
) -> None:
    """Each batch one frame; on a new connection (after any failure) what was not acked goes first. Ends once
    `batches` is exhausted and everything is acked, or at `give_up`. A rejected frame fails the test."""
    unacked: list[list[int]] = []
    exhausted = False
    while (unacked or not exhausted) and not give_up.is_set():
        numbered: dict[int, list[int]] = {}
        try:
            async with DeviceClient.connect(
                base(), token, on_handled=ledger.acker(key, numbered), open_timeout=5
            ) as client:
                for batch in unacked:
                    numbered[client.sent + 1] = batch
                    await client.send(_message(batch))
                async for batch in batches:  # after a failure, the same iterator goes on where it was
                    ledger.record_sent(key, batch)
                    unacked.append(batch)
                    numbered[client.sent + 1] = batch
                    await client.send(_message(batch))
                exhausted = True
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(5):  # a socket that stays open but silent is replaced
                        await client.all_acked()
                assert not client.errors, f"the hub rejected frames of {key}: {client.errors}"
        except (OSError, websockets.WebSocketException):
            await asyncio.sleep(0.2)  # reconnect backoff, as a device has
        acked = ledger.acked.get(key, set())
        unacked = [batch for batch in unacked if not set(batch) <= acked]


async def http_device(
    base: Callable[[], str], key: str, token: str, ledger: Ledger, *, posts: int, per_post: int, stop: asyncio.Event
) -> None:
    """POSTs `posts` bodies, each retried until it gets 200 (or `stop`)."""
    t0 = now_ms() - 7_200_000
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
                await asyncio.sleep(0.2)  # retry backoff, as a device has
            await asyncio.sleep(0.01)  # pace: the posts spread over a while, so a fault lands among them


@dataclass
class Bystanders:
    """What a well-behaved WebSocket device and HTTP device noticed while sending beside a hostile one."""

    ledger: Ledger = field(default_factory=Ledger)
    failures: list[str] = field(default_factory=list)  # anything but an ack or a 200, on the first try

    async def unharmed(self) -> dict[str, int]:
        """Every reading acked on its first try and stored once; returns (and prints) the ledger."""
        report = await self.ledger.reconcile()
        assert self.failures == [], f"the bystanders noticed: {self.failures[:5]} ({len(self.failures)} in all)"
        assert report["sent"] > 0 and report["acked"] == report["sent"] == report["stored"], report
        assert report["lost"] == report["unexpected"] == report["duplicates"] == 0, report
        return report


@contextlib.asynccontextmanager
async def bystanders(hub, ws_token: tuple[str, str], http_token: tuple[str, str], *, every: float = 0.01):
    """Inside the block a WebSocket device (one connection, never resending) and an HTTP device (each POST once)
    send a message of 5 readings every `every` s; on the way out their last messages are awaited."""
    seen, stop = Bystanders(), asyncio.Event()

    async def ws_sender(key: str, token: str) -> None:
        numbered: dict[int, list[int]] = {}
        next_ts = now_ms() - 600_000
        try:
            async with DeviceClient.connect(hub.ws, token, on_handled=seen.ledger.acker(key, numbered)) as client:
                while not stop.is_set():
                    ts = [next_ts + i for i in range(5)]
                    next_ts += 5
                    seen.ledger.record_sent(key, ts)
                    numbered[await client.send(_message(ts))] = ts
                    await asyncio.sleep(every)  # pace: a device sending at its own rate
                async with asyncio.timeout(10):
                    await client.all_acked()
                seen.failures += [f"ws error frame {e}" for e in client.errors.values()]
        except (OSError, TimeoutError, ConnectionError, websockets.WebSocketException) as exc:
            seen.failures.append(f"ws: {type(exc).__name__}: {exc}")

    async def http_sender(key: str, token: str) -> None:
        next_ts = now_ms() - 1_200_000
        async with httpx.AsyncClient(timeout=10) as client:
            while not stop.is_set():
                ts = [next_ts + i for i in range(5)]
                next_ts += 5
                seen.ledger.record_sent(key, ts)
                try:
                    response = await client.post(f"{hub.http}/api/v1/{token}/telemetry", content=_message(ts))
                except httpx.HTTPError as exc:
                    seen.failures.append(f"http: {type(exc).__name__}: {exc}")
                else:
                    if response.status_code == 200:
                        seen.ledger.record_acked(key, ts)
                    else:
                        seen.failures.append(f"http {response.status_code}: {response.text[:200]}")
                await asyncio.sleep(every)  # pace

    tasks = [asyncio.create_task(ws_sender(*ws_token)), asyncio.create_task(http_sender(*http_token))]
    try:
        yield seen
    finally:
        stop.set()
        await asyncio.gather(*tasks)
