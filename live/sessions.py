"""Who opens a dashboard stream: the operator of its session cookie, read once at the handshake."""

from importlib import import_module

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.http import HttpRequest
from django.http.cookie import parse_cookie


class StreamSessionMiddleware:
    """ASGI: `scope["user"]` of a dashboard stream from its session cookie, read once at the handshake.

    Channels' AuthMiddlewareStack keeps the session and two wrappers for the socket's whole life and checks
    the session on every message sent; a stream never changes its session, so this one only looks the user
    up (session hash and all, as Django's `get_user` does) and keeps nothing: less memory per idle stream
    and no work per message."""

    def __init__(self, inner) -> None:
        self.inner = inner

    async def __call__(self, scope, receive, send):
        cookies = parse_cookie(dict(scope.get("headers", ())).get(b"cookie", b"").decode("latin-1"))
        user = await _session_user(cookies.get(settings.SESSION_COOKIE_NAME))
        return await self.inner({**scope, "user": user}, receive, send)


@database_sync_to_async
def _session_user(session_key: str | None) -> AbstractBaseUser | AnonymousUser:
    if not session_key:
        return AnonymousUser()
    request = HttpRequest()
    request.session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    return get_user(request)
