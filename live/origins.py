"""Dashboard streams are opened by the hub's own pages only: the Origin must be the hub's origin exactly.

Browsers send cookies with a WebSocket handshake whatever page opens it, so a stream must check who asks.
Channels' AllowedHostsOriginValidator compares the Origin's host with ALLOWED_HOSTS and ignores its scheme and
port: a page at http://127.0.0.1:9999 (any other program on the hub's machine) or https://127.0.0.1 got a logged-in
operator's stream (issue 17). Here scheme, host and port must all equal the request's own origin (the scheme the
client used, behind a TLS proxy as SECURE_PROXY_SSL_HEADER says, and the Host header, which must be an allowed
host) or one of CSRF_TRUSTED_ORIGINS (HUB_CSRF_TRUSTED_ORIGINS; `https://*.example.com` covers subdomains).
"""

from typing import Any
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host

Origin = tuple[str, str, int]  # scheme, host, port
_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url: str) -> Origin | None:
    """(scheme, host, port) of an http(s) origin, or None."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    return parts.scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[parts.scheme]


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def own_origin(scope: dict[str, Any]) -> Origin | None:
    """The origin the client reached the hub at: its scheme and its (allowed) Host header."""
    secure = scope.get("scheme") in ("wss", "https")
    if settings.SECURE_PROXY_SSL_HEADER:
        name, value = settings.SECURE_PROXY_SSL_HEADER
        header = name.removeprefix("HTTP_").replace("_", "-").lower().encode()
        secure = secure or _header(scope, header) == value
    host = _header(scope, b"host")
    if host is None or not validate_host(split_domain_port(host)[0], settings.ALLOWED_HOSTS):
        return None
    return origin_of(f"{'https' if secure else 'http'}://{host}")


def origin_allowed(scope: dict[str, Any]) -> bool:
    origin = origin_of(_header(scope, b"origin") or "")
    if origin is None:
        return False
    if origin == own_origin(scope):
        return True
    for trusted in settings.CSRF_TRUSTED_ORIGINS:
        scheme, _, host = trusted.partition("://")
        if host.startswith("*."):  # Django's wildcard: any subdomain, with the scheme and port given
            wanted = origin_of(f"{scheme}://{host[2:]}")
            if wanted and origin[0] == wanted[0] and origin[2] == wanted[2] and origin[1].endswith("." + wanted[1]):
                return True
        elif origin == origin_of(trusted):
            return True
    return False


class SameOriginValidator:
    """ASGI middleware for WebSockets: refuse the handshake (403) unless `origin_allowed`."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if origin_allowed(scope):
            await self.app(scope, receive, send)
        else:
            await WebsocketDenier()(scope, receive, send)
