"""Connected devices whose token was rotated (or whose device was deleted) are disconnected within seconds.

Each process keeps its open device sockets by token hash and checks them all in one query every
HUB_TOKEN_RECHECK_SECONDS, so the cost does not grow with one query per connection.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable

from channels.db import database_sync_to_async
from django.conf import settings

from devices.models import Device

logger = logging.getLogger(__name__)

Closer = Callable[[], Awaitable[None]]
_open: dict[str, set[Closer]] = {}


def connection_opened(token_hash: str, close: Closer) -> None:
    _open.setdefault(token_hash, set()).add(close)


def connection_closed(token_hash: str, close: Closer) -> None:
    closers = _open.get(token_hash)
    if closers is not None:
        closers.discard(close)
        if not closers:
            del _open[token_hash]


@database_sync_to_async
def _still_valid(hashes: list[str]) -> set[str]:
    return set(Device.objects.filter(token_hash__in=hashes).values_list("token_hash", flat=True))


async def revoked_connections_close() -> int:
    """Close every open connection whose token no longer authenticates; returns how many."""
    hashes = list(_open)
    if not hashes:
        return 0
    valid = await _still_valid(hashes)
    closers = [close for h in hashes if h not in valid for close in _open.pop(h, ())]
    await asyncio.gather(*(close() for close in closers), return_exceptions=True)
    if closers:
        logger.info("closed %d device connection(s) whose token was revoked", len(closers))
    return len(closers)


async def revocation_loop() -> None:
    """Owned by the ASGI lifespan."""
    while True:
        await asyncio.sleep(settings.HUB_TOKEN_RECHECK_SECONDS)
        try:
            await revoked_connections_close()
        except Exception:
            logger.warning("token re-check failed; retrying", exc_info=True)
