"""Cumulative acknowledgements for one WebSocket connection.

Frames are numbered from 1. `{"ack": N}` means frames 1..N are handled: committed, or rejected with an
error frame (by the parser, or by the writer when the database refuses a value). Entries are resolved
strictly in order, so an ack never covers an uncommitted frame.
"""

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from ingest.parsing import IngestError

SendJson = Callable[[dict[str, Any]], Awaitable[None]]
OnFailure = Callable[[BaseException], Awaitable[None]]
Entry = asyncio.Future[None] | IngestError


class AckSequencer:
    """Owns the task that turns commit futures into in-order acks and error frames."""

    def __init__(self, send: SendJson, on_failure: OnFailure, *, max_inflight: int) -> None:
        self._send = send
        self._on_failure = on_failure
        self._entries: deque[tuple[int, Entry]] = deque()
        self._slots = asyncio.Semaphore(max_inflight)
        self._arrived = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="hub-acks")

    async def committed_later(self, frame: int, future: asyncio.Future[None]) -> None:
        """Frame `frame` is queued for commit; waits while too many frames are in flight (backpressure)."""
        await self._add(frame, future)

    async def rejected(self, frame: int, error: IngestError) -> None:
        await self._add(frame, error)

    async def _add(self, frame: int, entry: Entry) -> None:
        await self._slots.acquire()
        self._entries.append((frame, entry))
        self._arrived.set()

    async def _run(self) -> None:
        while True:
            if not self._entries:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            frame, entry = self._entries.popleft()
            self._slots.release()
            if isinstance(entry, IngestError):
                await self._send({"error": {"frame": frame, **entry.as_dict()}})
            else:
                try:
                    await entry
                except IngestError as error:  # refused for its content at commit: final, like a parse error
                    await self._send({"error": {"frame": frame, **error.as_dict()}})
                except Exception as exc:
                    # Not committed: never ack it; the connection is closed so the device resends.
                    await self._on_failure(exc)
                    return
            # Coalesce over what is already handled behind this frame, but never wait for a later commit:
            # a device streaming faster than the writer flushes would otherwise hear nothing until it pauses.
            if not self._entries or not _handled(self._entries[0][1]):
                await self._send({"ack": frame})

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def _handled(entry: Entry) -> bool:
    """Rejected, or committed (a failed commit is not: what was committed before it is acked first)."""
    if isinstance(entry, IngestError):
        return True
    return entry.done() and not entry.cancelled() and isinstance(entry.exception(), IngestError | None)
