"""Label scopes on live streams: a scoped person's streams carry only the devices of their scope, and a device
that leaves it (its labels changed, or the person's scope) leaves their open streams within one refresh
(HUB_STREAM_SCOPE_REFRESH_SECONDS). One query per distinct scope per refresh, whatever the number of streams."""

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from django.db import connection

from accounts.scopes import Scope, scoped
from devices.models import Device

logger = logging.getLogger(__name__)

Keys = frozenset[str]


class ScopedStream(Protocol):
    def scope_seen(self, keys: Keys) -> None:
        """The keys of the devices its scope covers now."""


def keys_in_scope(scope: Scope) -> Keys:
    """The keys of every device the scope covers (in a thread: a database query)."""
    try:
        return frozenset(scoped(Device.objects.all(), scope).values_list("key", flat=True))
    finally:
        connection.close()


class ScopeWatch:
    """The scoped streams of a process, told each refresh which devices their scope covers."""

    def __init__(self, refresh_seconds: float, run_query: Callable) -> None:
        self._refresh = refresh_seconds
        self._query = run_query  # async: a sync function and its arguments, run on the streams' threads
        self._streams: dict[ScopedStream, Scope] = {}
        self._task: asyncio.Task[None] | None = None

    async def watch(self, stream: ScopedStream, scope: Scope) -> Keys:
        """Follow `stream`; the keys its scope covers now."""
        self._streams[stream] = scope
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._refreshing(), name="hub-stream-scopes")
        return await self._query(keys_in_scope, scope)

    def forget(self, stream: ScopedStream) -> None:
        self._streams.pop(stream, None)

    async def _refreshing(self) -> None:
        while self._streams:
            await asyncio.sleep(self._refresh)
            by_scope: dict[Scope, list[ScopedStream]] = {}
            for stream, scope in list(self._streams.items()):
                by_scope.setdefault(scope, []).append(stream)
            for scope, streams in by_scope.items():
                try:
                    keys = await self._query(keys_in_scope, scope)
                except Exception:  # the database away: keep what they had, try again next refresh
                    logger.warning("stream scopes: refresh failed", exc_info=True)
                    continue
                for stream in streams:
                    if stream in self._streams:
                        stream.scope_seen(keys)
        self._task = None

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
