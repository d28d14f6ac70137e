"""Request ids for the logs, and the Content-Security-Policy of every page."""

from collections.abc import Awaitable, Callable
from typing import cast

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse

from core.logs import request_id, request_id_from


class _AroundMiddleware:
    """Django middleware for sync and async stacks alike: `before` the view, `after` it on the response."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse | Awaitable[HttpResponse]]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest):
        if self.is_async:
            return self._acall(request)
        self.before(request)
        response = cast(HttpResponse, self.get_response(request))  # a sync stack answers at once
        self.after(response)
        return response

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        self.before(request)
        response = await cast("Awaitable[HttpResponse]", self.get_response(request))  # an async stack's coroutine
        self.after(response)
        return response

    def before(self, request: HttpRequest) -> None:
        return None

    def after(self, response: HttpResponse) -> None:
        return None


class RequestIdMiddleware(_AroundMiddleware):
    """Sets the request id for the logs and echoes it in the X-Request-ID response header.

    The id is not reset on the way out: Django logs 4xx/5xx responses after the middleware chain
    returns, in the same request context, and those lines need it too. Every request sets its own.
    """

    def before(self, request: HttpRequest) -> None:
        request_id.set(request_id_from(request.headers.get("X-Request-ID")))

    def after(self, response: HttpResponse) -> None:
        response["X-Request-ID"] = request_id.get()


# Scripts and styles from the hub's own static files only: no inline <script> or <style>, no style attributes, no
# other origin (a value injected into a page cannot run). json_script blocks are data, not scripts: allowed.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        # Plotly.js adds two <style> elements at run time (an empty one, then its global rules): allowed by hash,
        # so nothing else inline applies. tests/browser_chromium.py fails a page on any violation (a new Plotly).
        "style-src 'self' 'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=' "
        "'sha256-ji27qzEtxXZW+7dun6UwjHXJ18e6WAin1VvNtkzIE/o='",
        "img-src 'self' data:",
        "connect-src 'self'",  # the pages' fetches and WebSockets (CSP 3: 'self' covers ws: and wss: too)
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


class ContentSecurityPolicyMiddleware(_AroundMiddleware):
    """Adds the hub's Content-Security-Policy to every response that has none."""

    def after(self, response: HttpResponse) -> None:
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
