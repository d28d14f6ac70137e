"""Request ids for the logs, the Content-Security-Policy of every page, and query strings no handler can use."""

from collections.abc import Awaitable, Callable
from typing import cast

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.http import HttpRequest, HttpResponse, JsonResponse

from core.logs import request_id, request_id_from
from dashboards.errors import error_page


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
        response = self.before(request) or cast(HttpResponse, self.get_response(request))  # sync: answers at once
        self.after(response)
        return response

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        response = self.before(request) or await cast("Awaitable[HttpResponse]", self.get_response(request))
        self.after(response)
        return response

    def before(self, request: HttpRequest) -> HttpResponse | None:
        """An answer of its own (the view is not called), or None."""
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
        return None

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


class RefuseNulMiddleware(_AroundMiddleware):
    """400 for a NUL character in a query parameter's name or value, on every page and endpoint alike.

    No key, name, label or number holds one, and PostgreSQL refuses it in text, so a NUL reaching a query became
    a 500 (issue 22: `/?q=%00`, `/api/v1/alerts?device=%00`). The answer names the parameter; the API's in its
    error shape."""

    def before(self, request: HttpRequest) -> HttpResponse | None:
        for name, values in request.GET.lists():
            if "\x00" in name + "".join(values):
                shown = name.replace("\x00", "")
                message = f"{shown}: a NUL character is not allowed"
                if request.path.startswith("/api/"):
                    error = {"code": "invalid_parameter", "message": message, "parameter": shown}
                    return JsonResponse({"error": error}, status=400)
                return HttpResponse(message, status=400, content_type="text/plain; charset=utf-8")
        return None


class ContentSecurityPolicyMiddleware(_AroundMiddleware):
    """Adds the hub's Content-Security-Policy to every response that has none."""

    def after(self, response: HttpResponse) -> None:
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)


class MethodNotAllowedPage(_AroundMiddleware):
    """A page answered 405 (a GET to a form's POST address) says so in the site's page, not a blank one."""

    def __call__(self, request: HttpRequest):
        if self.is_async:
            return self._answered(request)
        return self._replaced(request, cast(HttpResponse, self.get_response(request)))

    async def _answered(self, request: HttpRequest) -> HttpResponse:
        response = await cast("Awaitable[HttpResponse]", self.get_response(request))
        if response.status_code != 405:
            return response
        # Rendering reads the session and the user (the page's navigation): database work, off the event loop.
        return await sync_to_async(self._replaced)(request, response)

    def _replaced(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        if response.status_code != 405 or response.content or request.path.startswith("/api/"):
            return response
        allowed = response.get("Allow", "")
        page = error_page(request, 405, f"{request.path} takes {allowed or 'another method'}, not {request.method}")
        page["Allow"] = allowed
        return page
