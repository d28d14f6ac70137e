"""Request ids for the logs, and the Content-Security-Policy of every page."""

from collections.abc import Awaitable, Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse

from core.logs import request_id, request_id_from


class RequestIdMiddleware:
    """Sets the request id for the logs and echoes it in the X-Request-ID response header.

    The id is not reset on the way out: Django logs 4xx/5xx responses after the middleware chain
    returns, in the same request context, and those lines need it too. Every request sets its own.
    """

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
        request_id.set(request_id_from(request.headers.get("X-Request-ID")))
        response = self.get_response(request)
        response["X-Request-ID"] = request_id.get()
        return response

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        request_id.set(request_id_from(request.headers.get("X-Request-ID")))
        response = await self.get_response(request)
        response["X-Request-ID"] = request_id.get()
        return response


# Scripts and styles from the hub's own static files only: no inline <script> or <style>, no style attributes, no
# other origin (a value injected into a page cannot run). json_script blocks are data, not scripts: allowed.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",  # the pages' fetches and WebSockets (CSP 3: 'self' covers ws: and wss: too)
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


class ContentSecurityPolicyMiddleware:
    """Adds the hub's Content-Security-Policy to every response that has none."""

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
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        return response

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        response = await self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        return response
