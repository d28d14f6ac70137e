"""Who opens a dashboard stream: the operator of its session cookie, read once at the handshake; and which of the open
streams' sessions still exist (live/scopes.py asks every refresh, so a logout closes that browser's streams)."""

from collections.abc import Collection
from importlib import import_module

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore
from django.http import HttpRequest
from django.http.cookie import parse_cookie
from django.utils import timezone


class StreamSessionMiddleware:
    """ASGI: `scope["user"]` of a dashboard stream from its session cookie, read once at the handshake.

    Channels' AuthMiddlewareStack keeps the session and two wrappers for the socket's whole life and checks
    the session on every message sent; a stream never changes its session, so this one only looks the user
    up (session hash and all, as Django's `get_user` does) and keeps nothing: less memory per idle stream
    and no work per message. The session's key goes along (`scope["session_key"]`): the streams' refresh closes
    a stream whose session ended (logout, expiry) with 4401."""

    def __init__(self, inner) -> None:
        self.inner = inner

    async def __call__(self, scope, receive, send):
        cookies = parse_cookie(dict(scope.get("headers", ())).get(b"cookie", b"").decode("latin-1"))
        session_key = cookies.get(settings.SESSION_COOKIE_NAME)
        user = await _session_user(session_key)
        return await self.inner({**scope, "user": user, "session_key": session_key}, receive, send)


@database_sync_to_async
def _session_user(session_key: str | None) -> AbstractBaseUser | AnonymousUser:
    if not session_key:
        return AnonymousUser()
    request = HttpRequest()
    request.session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    return get_user(request)


def sessions_alive(session_keys: Collection[str]) -> set[str]:
    """Those of these session keys whose session still exists and has not expired, in one query however many (the
    open streams' refresh asks every HUB_STREAM_SCOPE_REFRESH_SECONDS). Only an engine that keeps its sessions in
    the database (Django's default, `db`, and `cached_db`) can be asked so; with another, every session counts as
    alive and a stream's session is checked at its handshake only."""
    store = import_module(settings.SESSION_ENGINE).SessionStore
    if not issubclass(store, DatabaseSessionStore):
        return set(session_keys)
    alive = store.get_model_class().objects.filter(session_key__in=session_keys, expire_date__gt=timezone.now())
    return set(alive.values_list("session_key", flat=True))
