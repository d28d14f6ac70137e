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
    """Turns commit futures into in-order acks and error frames, in a task of its own while frames come.

    A quiet socket holds none of it: the queue, the task and its wake-ups exist while frames are in flight and
    for `linger` seconds after (issue 26: about 3 KiB of every idle device socket).
    """

    __slots__ = ("_entries", "_linger", "_max", "_on_failure", "_send", "_space", "_task", "_wakeup")

    def __init__(self, send: SendJson, on_failure: OnFailure, *, max_inflight: int, linger: float = 1.0) -> None:
        self._send = send
        self._on_failure = on_failure
        self._max = max_inflight
        self._linger = linger
        self._entries: deque[tuple[int, Entry]] | None = None
        self._space: asyncio.Future[None] | None = None  # the frame waiting for a slot (backpressure)
        self._wakeup: asyncio.Future[None] | None = None  # the idle task waiting for a frame
        self._task: asyncio.Task[None] | None = None

    async def committed_later(self, frame: int, future: asyncio.Future[None]) -> None:
        """Frame `frame` is queued for commit; waits while too many frames are in flight (backpressure)."""
        await self._add(frame, future)

    async def rejected(self, frame: int, error: IngestError) -> None:
        await self._add(frame, error)

    async def _add(self, frame: int, entry: Entry) -> None:
        while self._entries is not None and len(self._entries) >= self._max:
            self._space = asyncio.get_running_loop().create_future()
            await self._space
        if self._entries is None:
            self._entries = deque()
        self._entries.append((frame, entry))
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="hub-acks")
        elif self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    async def _run(self) -> None:
        while True:
            if not self._entries:
                if not await self._more():
                    return
                continue
            frame, entry = self._entries.popleft()
            if self._space is not None and not self._space.done():
                self._space.set_result(None)
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

    async def _more(self) -> bool:
        """Wait up to `linger` for a frame; when none came, let the queue and this task go (False)."""
        self._wakeup = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(self._linger):
                await self._wakeup
        except TimeoutError:
            if not self._entries:  # nothing can arrive between this check and the return: one thread, no await
                self._entries = self._task = None
                return False
        finally:
            self._wakeup = None
        return True

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _handled(entry: Entry) -> bool:
    """Rejected, or committed (a failed commit is not: what was committed before it is acked first)."""
    if isinstance(entry, IngestError):
        return True
    return entry.done() and not entry.cancelled() and isinstance(entry.exception(), IngestError | None)
