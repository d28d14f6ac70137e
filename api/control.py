"""A device's attributes (client: reported by it; shared: set here, delivered to it; server: operators' own) and
its commands (server-side RPC): send one and wait for its outcome, or queue it for a device that is away; list
them (docs/commands.md)."""

from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.db import close_old_connections
from django.http import HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.audit import audit_record
from accounts.requests import actor_in
from api import shapes
from api.devices import device_or_404
from api.errors import ApiError
from api.rest import Pages, body_fields
from control.attributes import AttributesRefused, Scope, attributes_listed
from control.commands import CommandAsk, CommandRefused, command_summary
from control.models import Command
from control.sending import attributes_changed, command_outcome, command_queued
from core.epoch import from_epoch_ms
from core.state import runtime_in


class AttributeShape(serializers.Serializer):
    key = serializers.CharField()
    value = serializers.JSONField()
    updated_at = serializers.IntegerField(help_text="ms since the epoch")
    updated_by = serializers.CharField(help_text='a username, or "device"')


class Attributes(serializers.Serializer):
    client = AttributeShape(many=True)
    shared = AttributeShape(many=True)
    server = AttributeShape(many=True)


class CommandAskShape(serializers.Serializer):
    method = serializers.CharField()
    params = serializers.JSONField(required=False)
    timeout = serializers.IntegerField(required=False, help_text="ms: the wait for a response (default 10000)")
    two_way = serializers.BooleanField(required=False, help_text="wait for the device's response (default true)")
    persistent = serializers.BooleanField(required=False, help_text="queued for a device that is away")
    expirationTime = serializers.IntegerField(required=False, help_text="ms since the epoch: a persistent one's end")  # noqa: N815


class CommandShape(serializers.Serializer):
    id = serializers.IntegerField()
    method = serializers.CharField()
    params = serializers.JSONField()
    two_way = serializers.BooleanField()
    persistent = serializers.BooleanField()
    state = serializers.ChoiceField(choices=Command.State.values)
    response = serializers.JSONField(allow_null=True)
    created_at = serializers.IntegerField()
    expires_at = serializers.IntegerField()
    timeout = serializers.IntegerField()
    sent_at = serializers.IntegerField(allow_null=True)
    delivered_at = serializers.IntegerField(allow_null=True)
    answered_at = serializers.IntegerField(allow_null=True)
    answer_by = serializers.IntegerField(allow_null=True)
    attempts = serializers.IntegerField()
    created_by = serializers.CharField()


F = TypeVar("F", bound=Callable)
WRITABLE = {Scope.SHARED.value, Scope.SERVER.value}


def _scope_writable(scope: str) -> str:
    if scope not in WRITABLE:
        raise ApiError(
            400, "invalid", "scope: shared or server (client attributes are the device's own)", field="scope"
        )
    return scope


def _bus(request: Request):
    return runtime_in(request._request.scope).control


class AttributeList(APIView):
    @extend_schema(operation_id="device_attributes", responses={200: Attributes, 404: shapes.Error, **shapes.ERRORS})
    def get(self, request: Request, key: str) -> Response:
        return Response(attributes_listed(device_or_404(actor_in(request), key).id))


class AttributeScope(APIView):
    @extend_schema(
        operation_id="device_attributes_set",
        summary="Set shared (delivered to the device at once) or server attributes: a JSON object of them",
        request={"application/json": {"type": "object", "additionalProperties": True}},
        responses={200: Attributes, 404: shapes.Error, **shapes.ERRORS},
    )
    def post(self, request: Request, key: str, scope: str) -> Response:
        return self._changed(request, key, scope, values=request.data)

    @extend_schema(
        operation_id="device_attributes_delete",
        summary="Delete shared or server attributes (`keys`, comma-separated); a shared deletion reaches the device",
        parameters=[OpenApiParameter("keys", str, required=True)],
        responses={200: Attributes, 404: shapes.Error, **shapes.ERRORS},
    )
    def delete(self, request: Request, key: str, scope: str) -> Response:
        keys = [k.strip() for k in request.query_params.get("keys", "").split(",") if k.strip()]
        if not keys:
            raise ApiError(400, "invalid_parameter", "keys: name the attributes to delete", parameter="keys")
        return self._changed(request, key, scope, deleted=keys)

    def _changed(self, request: Request, key: str, scope: str, **change: object) -> Response:
        actor = actor_in(request)
        device = device_or_404(actor, key)
        try:
            done = attributes_changed(
                _bus(request), device_id=device.id, key=device.key, scope=_scope_writable(scope), by=actor.name,
                **change,  # type: ignore[arg-type]
            )  # fmt: skip
        except AttributesRefused as refused:
            raise ApiError(400, "invalid", f"{refused.field}: {refused.message}", field=refused.field) from None
        audit_record(actor, f"attribute.{'delete' if done.deleted else 'set'}", device, scope=scope,
                     keys=sorted(done.values) or done.deleted)  # fmt: skip
        return Response(attributes_listed(device.id))


class CommandList(APIView):
    pagination_class = Pages

    @extend_schema(
        operation_id="device_commands",
        summary="A device's commands, newest first",
        parameters=[OpenApiParameter("state", str, enum=Command.State.values)],
        responses={200: CommandShape(many=True), 404: shapes.Error, **shapes.ERRORS},
    )
    def get(self, request: Request, key: str) -> Response:
        commands = Command.objects.filter(device=device_or_404(actor_in(request), key)).order_by("-id")
        if state := request.query_params.get("state"):
            commands = commands.filter(state=state)
        paginator = Pages()
        page = paginator.paginate_queryset(commands, request, view=self)
        return paginator.get_paginated_response([command_summary(c) for c in page])

    @extend_schema(
        operation_id="device_rpc",
        summary="Send a command: answered when it ends (delivered, one-way; answered, two-way) or 504 at its "
        "timeout; a persistent one is answered 202 at once and waits for its device",
        request=CommandAskShape,
        responses={
            200: CommandShape,
            202: CommandShape,
            404: shapes.Error,
            429: shapes.Error,
            504: shapes.Error,
            **shapes.ERRORS,
        },  # fmt: skip
    )
    def post(self, request: Request, key: str) -> Response:
        actor = actor_in(request)
        device = device_or_404(actor, key)
        types = {"method": str, "params": object, "timeout": int, "two_way": bool, "persistent": bool,
                 "expirationTime": int}  # fmt: skip
        fields = body_fields(request, types=types, required=["method"])
        expires = fields.get("expirationTime")
        ask = CommandAsk(
            method=fields["method"], params=fields.get("params"), two_way=fields.get("two_way", True),
            persistent=fields.get("persistent", False), timeout_ms=fields.get("timeout", 10_000),
            expires_at=_instant(expires) if expires is not None else None,
        )  # fmt: skip
        try:
            command = command_queued(_bus(request), device_id=device.id, key=device.key, ask=ask, by=actor.name)
        except CommandRefused as refused:
            message = f"{refused.field}: {refused.message}"
            raise ApiError(refused.status, refused.code, message, field=refused.field) from None
        audit_record(actor, "command.send", device, method=ask.method, id=command.id, persistent=ask.persistent)
        response = Response(command_summary(command), status=202)
        if not ask.persistent:
            response.hub_waits_for = command.id
        return response


def _instant(ms: int) -> datetime:
    try:
        return from_epoch_ms(ms)
    except (OverflowError, ValueError, OSError):
        raise ApiError(400, "invalid", "expirationTime: ms since the epoch", field="expirationTime") from None


class CommandDetail(APIView):
    @extend_schema(operation_id="device_command", responses={200: CommandShape, 404: shapes.Error, **shapes.ERRORS})
    def get(self, request: Request, key: str, command_id: int) -> Response:
        device = device_or_404(actor_in(request), key)
        command = Command.objects.filter(device=device, id=command_id).first()
        if command is None:
            raise ApiError(404, "unknown_command", f"no command {command_id} of {key!r}")
        return Response(command_summary(command))


def described_as(view: type[APIView]) -> Callable[[F], F]:
    """The schema describes the decorated view as the REST view it wraps (drf-spectacular reads `cls`)."""

    def mark(function: F) -> F:
        function.cls, function.initkwargs = view, {}  # type: ignore[attr-defined]
        return function

    return mark


@described_as(CommandList)
@csrf_exempt  # REST framework's session authentication checks the CSRF token itself
async def commands(request: ASGIRequest, key: str) -> HttpResponse:
    """CommandList, whose POST is then waited for here, off the thread that runs synchronous views: a command's
    wait (up to HUB_COMMAND_TIMEOUT_MAX_SECONDS) holds no thread."""
    response = await sync_to_async(CommandList.as_view())(request, key=key)
    command_id = getattr(response, "hub_waits_for", None)
    if command_id is None:
        return response
    # The request's thread keeps its database connection until the request ends: give it back before the wait,
    # or ten waiting commands would hold the whole pool (and devices could not answer them).
    await sync_to_async(close_old_connections)()  # CONN_MAX_AGE 0: closed, back to the pool
    command = await command_outcome(runtime_in(request.scope).control, command_id)
    if command is None:
        return JsonResponse({"error": {"code": "unknown_device", "message": f"{key!r} was deleted"}}, status=404)
    if command.state in (Command.State.TIMED_OUT, Command.State.EXPIRED):
        answered = command.state == Command.State.TIMED_OUT and command.two_way  # delivered, not answered
        message = f"the device did not {'answer' if answered else 'take it'} within {command.timeout_ms} ms"
        return JsonResponse({"error": {"code": "timeout", "message": message}, **command_summary(command)}, status=504)
    return JsonResponse(command_summary(command))
