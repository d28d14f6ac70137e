"""Request ids: each HTTP request gets one (or keeps the caller's X-Request-ID) for its log lines."""

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
