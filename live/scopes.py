"""The people behind open streams, followed live: a scoped person's streams carry only the devices of their scope,
and within one refresh (HUB_STREAM_SCOPE_REFRESH_SECONDS) a device that leaves it (its labels changed, or the
person's scope) leaves their open streams, a person who lost their role (or was deactivated or deleted) is closed
out, and a stream whose session ended (a logout, perhaps in another tab, or its expiry: issue 25) is closed as not
logged in. Each refresh: five queries for the people watched, one for their sessions, then one per distinct scope,
whatever the number of streams."""

import asyncio
import logging
from collections.abc import Callable
from typing import NamedTuple, Protocol

from django.db.models import QuerySet

from accounts.policy import Role, people_now
from accounts.scopes import Scope, scoped
from devices.models import Device
from live.sessions import sessions_alive

logger = logging.getLogger(__name__)

Keys = frozenset[str]


class WatchedStream(Protocol):
    def scope_seen(self, keys: Keys | None) -> None:
        """The keys of the devices its person's scope covers now (None: every device)."""

    def role_lost(self) -> None:
        """Its person may watch no more: close it (final)."""

    def session_ended(self) -> None:
        """The session it was opened with ended (logged out, expired): close it (final: log in again)."""


class Watched(NamedTuple):
    """Whose a stream is: its person and the session it was opened with."""

    user_id: int
    session_key: str


def keys_in_scope(scope: Scope) -> Keys:
    """The keys of every device the scope covers (a database query: run on the streams' threads)."""
    devices: QuerySet[Device] = scoped(Device.objects.all(), scope)
    return frozenset(devices.values_list("key", flat=True))


def _selectors(scope: Scope) -> tuple:
    """A scope as something hashable (its selectors are dicts)."""
    return tuple(tuple(sorted(selector.items())) for selector in scope)


class ScopeWatch:
    """The streams of a process and whose they are, told each refresh what their person may see now."""

    def __init__(self, refresh_seconds: float, run_query: Callable) -> None:
        self._refresh = refresh_seconds
        self._query = run_query  # async: a sync function and its arguments, run on the streams' threads
        self._streams: dict[WatchedStream, Watched] = {}
        self._task: asyncio.Task[None] | None = None

    async def watch(self, stream: WatchedStream, user_id: int, session_key: str, scope: Scope) -> Keys | None:
        """Follow `stream` of this person and session; the keys their scope covers now (None: every device)."""
        self._streams[stream] = Watched(user_id, session_key)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._refreshing(), name="hub-stream-people")
        return await self._query(keys_in_scope, scope) if scope else None

    def forget(self, stream: WatchedStream) -> None:
        self._streams.pop(stream, None)

    async def _refreshing(self) -> None:
        while self._streams:
            await asyncio.sleep(self._refresh)
            try:
                await self._refreshed()
            except Exception:  # the database away: keep what they had, try again next refresh
                logger.warning("stream people: refresh failed", exc_info=True)
        self._task = None

    async def _refreshed(self) -> None:
        watched = dict(self._streams)
        people = await self._query(people_now, {w.user_id for w in watched.values()})
        alive = await self._query(sessions_alive, {w.session_key for w in watched.values()})
        by_scope: dict[tuple, tuple[Scope, list[WatchedStream]]] = {}
        for stream, (user_id, session_key) in watched.items():
            role, scope = people.get(user_id, (Role.NONE, ()))
            if session_key not in alive:
                self.forget(stream)
                stream.session_ended()
            elif role < Role.VIEWER:
                self.forget(stream)
                stream.role_lost()
            elif scope:
                by_scope.setdefault(_selectors(scope), (scope, []))[1].append(stream)
            else:
                stream.scope_seen(None)
        for scope, streams in by_scope.values():
            keys = await self._query(keys_in_scope, scope)
            for stream in streams:
                if stream in self._streams:
                    stream.scope_seen(keys)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
