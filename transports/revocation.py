"""Connected devices whose token was rotated (or whose device was deleted) are disconnected within seconds.

Each process keeps its open device sockets by token hash (`OpenSockets`, owned by the hub runtime) and checks
them all in one query every HUB_TOKEN_RECHECK_SECONDS, so the cost does not grow with one query per
connection.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable

from channels.db import database_sync_to_async

from devices.models import Device

logger = logging.getLogger(__name__)

Closer = Callable[[], Awaitable[None]]


class OpenSockets:
    """This process's open device sockets, by token hash: how a rotated token reaches its connections."""

    def __init__(self) -> None:
        self._open: dict[str, set[Closer]] = {}

    def opened(self, token_hash: str, close: Closer) -> None:
        self._open.setdefault(token_hash, set()).add(close)

    def closed(self, token_hash: str, close: Closer) -> None:
        closers = self._open.get(token_hash)
        if closers is not None:
            closers.discard(close)
            if not closers:
                del self._open[token_hash]

    async def close_revoked(self) -> int:
        """Close every open connection whose token no longer authenticates; returns how many."""
        hashes = list(self._open)
        if not hashes:
            return 0
        valid = await _still_valid(hashes)
        closers = [close for h in hashes if h not in valid for close in self._open.pop(h, ())]
        await asyncio.gather(*(close() for close in closers), return_exceptions=True)
        if closers:
            logger.info("closed %d device connection(s) whose token was revoked", len(closers))
        return len(closers)


@database_sync_to_async
def _still_valid(hashes: list[str]) -> set[str]:
    return set(Device.objects.filter(token_hash__in=hashes).values_list("token_hash", flat=True))


async def revocation_loop(sockets: OpenSockets, every: float) -> None:
    """A loop of the hub runtime: every `every` seconds."""
    while True:
        await asyncio.sleep(every)
        try:
            await sockets.close_revoked()
        except Exception:
            logger.warning("token re-check failed; retrying", exc_info=True)
