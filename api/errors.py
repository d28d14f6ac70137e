"""The API's one error shape, `{"error": {"code", "message", "field"?, ...}}`, with the status its name says:
400 invalid, 401 who are you, 403 not allowed, 404 no such thing, 409 taken or no longer possible, 413 too
large, 429 too many. `field` names a body field; the history endpoints name a query `parameter`."""

from collections.abc import Mapping, Sequence

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
from rest_framework import exceptions

from devices.services import DevicesRefused

UNAUTHORIZED_MESSAGE = "log in or send Authorization: Bearer <api token>"


class ApiError(exceptions.APIException):
    """An answer other than success: status, a stable code, a message and, for a bad value, its field."""

    def __init__(self, status: int, code: str, message: str, *, field: str | None = None, **extra: object) -> None:
        super().__init__(message, code)
        self.status_code, self.code, self.message, self.field, self.extra = status, code, message, field, extra

    def body(self) -> dict:
        return {
            "code": self.code,
            "message": self.message,
            **({"field": self.field} if self.field else {}),
            **self.extra,
        }


def invalid(errors: Mapping[str, str | Sequence[str]], *, code: str = "invalid") -> ApiError:
    """400 naming the first refused field in `message` and `field`, every one in `fields`."""
    fields = {name: [messages] if isinstance(messages, str) else list(messages) for name, messages in errors.items()}
    first, messages = next(iter(fields.items()))
    field = None if first == "__all__" else first
    message = f"{field}: {' '.join(messages)}" if field else " ".join(messages)
    return ApiError(400, code, message, field=field, fields=fields)


def devices_refused(exc: DevicesRefused) -> ApiError:
    """409 when every refused row only has a taken key, else 400; every refused row named in `rows`."""
    rows = [{"row": p.row, "key": p.key, "field": p.field, "message": p.message} for p in exc.problems]
    first = exc.problems[0]
    where = f"row {first.row} ({first.key!r}): " if first.row else ""
    message = f"nothing created; {len(rows)} refused, the first: {where}{first.field}: {first.message}"
    if exc.conflict:
        return ApiError(409, "conflict", message, field=first.field, rows=rows)
    return ApiError(400, "invalid_rows", message, field=first.field, rows=rows)


def _body(exc: exceptions.APIException) -> dict:
    if isinstance(exc, ApiError):
        return exc.body()
    if isinstance(exc, exceptions.ValidationError):
        detail = exc.detail if isinstance(exc.detail, dict) else {"__all__": exc.detail}
        return invalid({name: [str(m) for m in messages] for name, messages in detail.items()}).body()
    if isinstance(exc, exceptions.NotAuthenticated):
        return {"code": "unauthorized", "message": UNAUTHORIZED_MESSAGE}
    code = {
        exceptions.AuthenticationFailed: "unauthorized",
        exceptions.NotFound: "not_found",
        exceptions.MethodNotAllowed: "method_not_allowed",
        exceptions.ParseError: "malformed_body",
        exceptions.UnsupportedMediaType: "unsupported_media_type",
        exceptions.Throttled: "rate_limited",
    }.get(type(exc), exc.default_code)
    message = str(exc.detail)
    if isinstance(exc, exceptions.PermissionDenied):
        code = "csrf_failed" if message.startswith("CSRF Failed") else "forbidden"
    return {"code": code, "message": message}


def exception_handler(exc: Exception, context: dict):
    """REST framework's handler (status, WWW-Authenticate, Retry-After, rollback) with the hub's body."""
    # Imported here: rest_framework.views reads the authentication classes (api.access imports this module)
    # while it is imported itself.
    from rest_framework.views import exception_handler as drf_exception_handler

    if isinstance(exc, Http404):
        exc = ApiError(404, "not_found", str(exc) or "not found")
    elif isinstance(exc, DjangoPermissionDenied):
        exc = ApiError(403, "forbidden", str(exc) or "not allowed")
    response = drf_exception_handler(exc, context)
    if response is not None:
        response.data = {"error": _body(exc)}
    return response  # None: not an API error, Django's 500
