"""Cumulative acknowledgements for one WebSocket connection.

Frames are numbered from 1. `{"ack": N}` means frames 1..N are handled: committed, or rejected with an
error frame. Entries are resolved strictly in order, so an ack never covers an uncommitted frame.
"""

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from ingest.parsing import IngestError

SendJson = Callable[[dict[str, Any]], Awaitable[None]]
OnFailure = Callable[[BaseException], Awaitable[None]]


class AckSequencer:
    """Owns the task that turns commit futures into in-order acks and error frames."""

    def __init__(self, send: SendJson, on_failure: OnFailure, *, max_inflight: int) -> None:
        self._send = send
        self._on_failure = on_failure
        self._entries: asyncio.Queue[tuple[int, asyncio.Future[None] | IngestError]] = asyncio.Queue(max_inflight)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="hub-acks")

    async def committed_later(self, frame: int, future: asyncio.Future[None]) -> None:
        """Frame `frame` is queued for commit; waits while too many frames are in flight (backpressure)."""
        await self._entries.put((frame, future))

    async def rejected(self, frame: int, error: IngestError) -> None:
        await self._entries.put((frame, error))

    async def _run(self) -> None:
        while True:
            frame, entry = await self._entries.get()
            if isinstance(entry, IngestError):
                await self._send({"error": {"frame": frame, **entry.as_dict()}})
            else:
                try:
                    await entry
                except Exception as exc:
                    # Not committed: never ack it; the connection is closed so the device resends.
                    await self._on_failure(exc)
                    return
            # Coalesce: ack once for everything already done behind this frame.
            if self._entries.empty():
                await self._send({"ack": frame})

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
