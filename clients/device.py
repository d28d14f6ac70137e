"""A device's side of the WebSocket ingest, for the simulator, the tests and the benches.

`ws://HOST/ws/v1/<TOKEN>/telemetry`: each text frame is one message, numbered from 1 on its connection.
`{"ack": N}` says frames 1..N are handled (committed, or rejected); `{"error": {"frame": N, ...}}` rejects
frame N and comes before the ack that covers it (docs/payload.md). Anything else is a ProtocolViolation.
"""

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import websockets
from websockets.asyncio.client import ClientConnection


def telemetry_url(base: str, token: str) -> str:
    """The ingest socket of the device with `token` on the hub at `base` (ws:// or wss://)."""
    return f"{base.rstrip('/')}/ws/v1/{token}/telemetry"


class ProtocolViolation(Exception):
    """The hub answered something the ack protocol does not allow."""


class Disconnected(ConnectionError):
    """The socket closed with frames or waiters outstanding."""


@dataclass(frozen=True, slots=True)
class Handled:
    """A frame the hub answered for: committed (`error` None) or rejected. Times are `time.perf_counter()`."""

    frame: int
    sent_at: float
    acked_at: float
    error: dict[str, Any] | None

    @property
    def latency(self) -> float:
        """Seconds from sending the frame to the ack that covered it."""
        return self.acked_at - self.sent_at


class DeviceClient:
    """One connection: sends numbered frames and resolves them from cumulative acks and error frames.

    Owns the task that reads the answers; `close()` (or leaving `connect()`) cancels and awaits it.
    """

    def __init__(self, ws: ClientConnection, *, on_handled: Callable[[Handled], None] | None = None) -> None:
        self._ws = ws
        self._on_handled = on_handled
        self.sent = 0  # the number of the last frame sent
        self.acked_upto = 0
        self.errors: dict[int, dict[str, Any]] = {}  # rejected frames of this connection
        self._inflight: deque[tuple[float, str]] = deque()  # (sent at, text) of frames acked_upto+1..sent
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._failure: BaseException | None = None
        self._reader = asyncio.create_task(self._read(), name="device-client-acks")

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(
        cls, base: str, token: str, *, on_handled: Callable[[Handled], None] | None = None, **options: Any
    ) -> AsyncIterator["DeviceClient"]:
        """A client on a new socket (`options` go to `websockets.connect`), closed on the way out."""
        async with websockets.connect(telemetry_url(base, token), **options) as ws:
            client = cls(ws, on_handled=on_handled)
            try:
                yield client
            finally:
                await client.close()

    async def send(self, message: str) -> int:
        """Send one text frame; returns its number."""
        if self._failure is not None:
            raise self._failure
        self.sent += 1
        self._inflight.append((time.perf_counter(), message))
        await self._ws.send(message)
        return self.sent

    async def acked(self, frame: int) -> None:
        """Return once frames 1..`frame` are handled; raises if the socket ends before."""
        if frame <= self.acked_upto:
            return
        if self._failure is not None:
            raise self._failure
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append((frame, waiter))
        await waiter

    async def all_acked(self) -> None:
        await self.acked(self.sent)

    async def window(self, frames: int) -> None:
        """Return once fewer than `frames` frames are unhandled: the next send keeps at most `frames` in flight."""
        await self.acked(self.sent + 1 - frames)

    def unacked(self) -> list[str]:
        """The messages sent, not yet acked and not rejected, in order: what a device sends again on a new
        connection."""
        first = self.acked_upto + 1
        return [text for frame, (_at, text) in enumerate(self._inflight, first) if frame not in self.errors]

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self._ws.close()

    async def _read(self) -> None:
        try:
            async for raw in self._ws:
                self._answer(orjson.loads(raw))
            failure: Exception = Disconnected(
                f"the hub closed the socket: {self._ws.close_code} {self._ws.close_reason}"
            )
        except asyncio.CancelledError:
            self._fail(Disconnected("the client closed the socket"))
            raise
        except Exception as exc:  # the socket failed, the hub broke the protocol, or `on_handled` raised
            failure = exc
        self._fail(failure)

    def _answer(self, message: Any) -> None:
        if not isinstance(message, dict):
            raise ProtocolViolation(f"not an object: {message!r}")
        if isinstance(message.get("error"), dict):
            frame = message["error"].get("frame")
            if not isinstance(frame, int) or not self.acked_upto < frame <= self.sent:
                raise ProtocolViolation(f"an error for frame {frame} of {self.sent} (acked {self.acked_upto})")
            self.errors[frame] = message["error"]
        elif "ack" in message:
            self._acked(message["ack"])
        else:
            raise ProtocolViolation(f"neither ack nor error: {message!r}")

    def _acked(self, upto: Any) -> None:
        if not isinstance(upto, int) or not self.acked_upto < upto <= self.sent:
            raise ProtocolViolation(f"ack {upto!r} after ack {self.acked_upto} of {self.sent} frames")
        now = time.perf_counter()
        for frame in range(self.acked_upto + 1, upto + 1):
            sent_at, _text = self._inflight.popleft()
            if self._on_handled is not None:
                self._on_handled(Handled(frame, sent_at, now, self.errors.get(frame)))
        self.acked_upto = upto
        if self._waiters:
            for _frame, waiter in [w for w in self._waiters if w[0] <= upto]:
                if not waiter.done():
                    waiter.set_result(None)
            self._waiters = [w for w in self._waiters if w[0] > upto]

    def _fail(self, exc: BaseException) -> None:
        """The socket is over: every waiter, and every later send or wait, raises `exc`."""
        self._failure = exc
        for _frame, waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(exc)
        self._waiters.clear()
