"""The REST framework plumbing of the API: bounded strict parsers, JSON-only answers, pages, typed bodies."""

from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from django.conf import settings
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import BaseParser
from rest_framework.request import Request

from api.errors import ApiError


def _bounded(stream, parser_context: dict | None, limit: int) -> bytes:
    """The body, refused with 413 past `limit` bytes: by its Content-Length, else by reading one byte more."""
    request = (parser_context or {}).get("request")
    declared = (request.META.get("CONTENT_LENGTH") or "") if request is not None else ""
    too_large = declared.isdigit() and int(declared) > limit
    body = b"" if too_large else stream.read(limit + 1)
    if too_large or len(body) > limit:
        raise ApiError(413, "payload_too_large", f"the body is limited to {limit} bytes")
    return body


class BoundedJSONParser(BaseParser):
    """JSON up to HUB_API_MAX_BODY_BYTES, parsed by orjson (strict: no NaN, valid UTF-8 only)."""

    media_type = "application/json"
    limit_setting = "HUB_API_MAX_BODY_BYTES"

    def parse(self, stream, media_type=None, parser_context=None) -> object:
        body = _bounded(stream, parser_context, getattr(settings, self.limit_setting))
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, "malformed_body", f"the body is not JSON: {exc}") from None
        if (where := _nul_in(data)) is not None:
            raise ApiError(400, "invalid", f"{where}: a NUL character (\\u0000) is not allowed", field=where)
        return data


def _nul_in(data: object) -> str | None:
    """The field (its top-level name, or `body`) of the first string, key or value, holding a NUL: no name, key,
    label or pattern of the hub holds one, and PostgreSQL refuses it in text."""
    stack = [(data, "body")]
    while stack:
        value, field = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                return field
        elif isinstance(value, dict):
            for key, item in value.items():
                name = key.replace("\x00", "") if field == "body" else field
                if "\x00" in key:
                    return name
                stack.append((item, name))
        elif isinstance(value, list):
            stack.extend((item, field) for item in value)
    return None


class BulkJSONParser(BoundedJSONParser):
    limit_setting = "HUB_API_BULK_MAX_BYTES"


class BulkCSVParser(BaseParser):
    """A CSV body (UTF-8) up to HUB_API_BULK_MAX_BYTES, handed over as text."""

    media_type = "text/csv"

    def parse(self, stream, media_type=None, parser_context=None) -> str:
        body = _bounded(stream, parser_context, settings.HUB_API_BULK_MAX_BYTES)
        try:
            return body.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ApiError(400, "malformed_body", "the CSV is not UTF-8") from None


class JsonOnly(DefaultContentNegotiation):
    """Every answer is the view's first renderer's, whatever Accept says (as the plain views before were)."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class Pages(PageNumberPagination):
    """`?page=N&page_size=M` (at most 1,000; HUB_API_PAGE_SIZE by default): count, next, previous, results."""

    page_size_query_param = "page_size"
    max_page_size = 1000

    def get_page_size(self, request) -> int:
        self.page_size = settings.HUB_API_PAGE_SIZE
        return super().get_page_size(request)


KINDS = {str: "a string", dict: "an object", list: "a list", int: "an integer", bool: "true or false"}


def body_fields(
    request: Request, *, types: Mapping[str, type | tuple[type, ...]], required: Iterable[str] = ()
) -> dict[str, Any]:
    """The JSON object of the body, with only fields of `types` (each of its type, or null where the type
    allows None) and every `required` one; else 400 naming the field."""
    data = request.data
    if not isinstance(data, dict):
        raise ApiError(400, "invalid", "the body is a JSON object")
    for name in required:
        if name not in data:
            raise ApiError(400, "invalid", f"{name}: required", field=name)
    for name, value in data.items():
        if name not in types:
            raise ApiError(400, "invalid", f"{name}: unknown field", field=name)
        kind = types[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if object in kinds:
            continue
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            wanted = " or ".join(KINDS.get(kind, "null") for kind in kinds)
            raise ApiError(400, "invalid", f"{name}: {wanted}", field=name)
    return dict(data)
