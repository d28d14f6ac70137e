"""Devices: list (paged, filtered), create (the token shown once), get, change, delete, rotate the token, bulk
import, and a device's alert events."""

from collections.abc import Mapping, Sequence

from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.audit import audit_record
from accounts.policy import Actor
from accounts.requests import actor_in
from accounts.scopes import scope_text
from alerts.selectors import alert_events_of_device
from api import shapes
from api.errors import ApiError, devices_refused, invalid
from api.params import DeviceFilter, HistoryParams, params_valid
from api.rest import BulkCSVParser, BulkJSONParser, Pages, body_fields
from core.epoch import from_epoch_ms
from devices.imports import device_specs_from_csv, device_specs_from_json, devices_import
from devices.models import Device
from devices.selectors import STATUSES, device_summary, devices_matching
from devices.services import (
    DeviceSpec,
    DevicesRefused,
    RowProblem,
    device_create,
    device_delete,
    device_token_rotate,
    device_update,
)


def unknown_device(key: str) -> ApiError:
    # The same answer for a device out of the caller's scope: a 403 would confirm that it exists.
    return ApiError(404, "unknown_device", f"no device {key!r}")


def device_or_404(actor: Actor, key: str) -> Device:
    device = actor.devices().filter(key=key).first()
    if device is None:
        raise unknown_device(key)
    return device


def labels_in_scope(actor: Actor, labels: Mapping[str, str], field: str = "labels") -> None:
    """400 when a device with these labels would be out of the caller's scope (they could not see it)."""
    if not actor.sees(dict(labels)):
        allowed = " or ".join(scope_text(actor.scope))
        raise ApiError(400, "out_of_scope", f"{field}: your devices carry {allowed}", field=field)


class DeviceList(APIView):
    pagination_class = Pages

    @extend_schema(
        operation_id="devices_list",
        summary="Devices, by key, a page at a time",
        parameters=[
            OpenApiParameter("q", str, description="text in the key or the name"),
            OpenApiParameter("label", str, description="name=value pairs that must all match: site=north,model=tx"),
            OpenApiParameter("status", str, enum=STATUSES, description="online (heard recently), offline, never"),
        ],
        responses={200: shapes.Device(many=True), **shapes.ERRORS},
    )
    def get(self, request: Request) -> Response:
        params = params_valid(DeviceFilter(request.query_params))
        now = timezone.now()
        devices = devices_matching(now=now, text=params["q"], labels=params["label"], status=params["status"])
        devices = actor_in(request).scoped(devices)
        paginator = Pages()
        page = paginator.paginate_queryset(devices, request, view=self)
        return paginator.get_paginated_response([device_summary(d, now=now) for d in page])

    @extend_schema(
        operation_id="devices_create",
        summary="Register a device; its token is in this answer only",
        request=shapes.DeviceCreate,
        responses={201: shapes.DeviceCreated, 409: shapes.Error, **shapes.ERRORS},
    )
    def post(self, request: Request) -> Response:
        fields = body_fields(request, types={"key": str, "name": str, "labels": dict}, required=["key"])
        actor = actor_in(request)
        labels_in_scope(actor, fields.get("labels") or {})
        try:
            device, token = device_create(**fields)
        except DevicesRefused as exc:
            raise devices_refused(exc) from None
        audit_record(actor, "device.create", device, name=device.name, labels=device.labels)
        return Response({**device_summary(device, now=timezone.now()), "token": token}, status=201)


class DeviceDetail(APIView):
    @extend_schema(operation_id="devices_get", responses={200: shapes.Device, 404: shapes.Error, **shapes.ERRORS})
    def get(self, request: Request, key: str) -> Response:
        return Response(device_summary(device_or_404(actor_in(request), key), now=timezone.now()))

    @extend_schema(
        operation_id="devices_update",
        summary="Change a device's name and/or labels (labels are replaced as a whole)",
        request=shapes.DeviceUpdate,
        responses={200: shapes.Device, 404: shapes.Error, **shapes.ERRORS},
    )
    def patch(self, request: Request, key: str) -> Response:
        fields = body_fields(request, types={"name": str, "labels": dict})
        actor = actor_in(request)
        before = device_or_404(actor, key)
        if "labels" in fields:
            labels_in_scope(actor, fields["labels"] or {})  # else the device would leave the caller's hands
        try:
            device = device_update(key=key, **fields)
        except Device.DoesNotExist:
            raise unknown_device(key) from None
        except ValidationError as exc:
            raise invalid(exc.message_dict) from None
        changes = {f: {"from": getattr(before, f), "to": getattr(device, f)} for f in fields}
        audit_record(actor, "device.change", device, **changes)
        return Response(device_summary(device, now=timezone.now()))

    @extend_schema(
        operation_id="devices_delete",
        summary="Delete a device, its readings and alert history; its token stops working",
        responses={204: None, 404: shapes.Error, **shapes.ERRORS},
    )
    def delete(self, request: Request, key: str) -> Response:
        actor = actor_in(request)
        device = device_or_404(actor, key)
        try:
            device_delete(key=key)
        except Device.DoesNotExist:
            raise unknown_device(key) from None
        audit_record(actor, "device.delete", device, name=device.name, labels=device.labels)
        return Response(status=204)


class DeviceTokenRotate(APIView):
    @extend_schema(
        operation_id="devices_token_rotate",
        summary="Issue a new token (shown once); the old one stops working",
        request=None,
        responses={200: shapes.DeviceToken, 404: shapes.Error, **shapes.ERRORS},
    )
    def post(self, request: Request, key: str) -> Response:
        actor = actor_in(request)
        device = device_or_404(actor, key)
        try:
            token = device_token_rotate(key=key)
        except Device.DoesNotExist:
            raise unknown_device(key) from None
        audit_record(actor, "device.token.rotate", device)  # never the token
        return Response({"key": key, "token": token})


def specs_out_of_scope(actor: Actor, specs: Sequence[DeviceSpec]) -> list[RowProblem]:
    """A row of a bulk import whose labels the caller's scope does not cover (rows are 1-based)."""
    allowed = " or ".join(scope_text(actor.scope))
    return [
        RowProblem(row=i, key=spec.key, field="labels", message=f"your devices carry {allowed}")
        for i, spec in enumerate(specs, start=1)
        if not actor.sees(dict(spec.labels))
    ]


class DeviceBulk(APIView):
    parser_classes = [BulkJSONParser, BulkCSVParser]

    @extend_schema(
        operation_id="devices_bulk_create",
        summary="Create many devices in one transaction, or none; each token in this answer only",
        description='JSON `{"devices": [{key, name, labels}]}`, or `Content-Type: text/csv` with the header '
        "`key,name,labels` (labels as `site=north, model=tx`, quoted). Every refused row is named in "
        "`error.rows`; 409 when each refusal is a taken key. At most HUB_API_BULK_MAX_DEVICES devices (413).",
        request={"application/json": shapes.BulkCreate, "text/csv": str},
        responses={201: shapes.BulkCreated, 409: shapes.Error, 413: shapes.Error, **shapes.ERRORS},
    )
    def post(self, request: Request) -> Response:
        if isinstance(request.data, str):
            specs, problems = device_specs_from_csv(request.data)
        else:
            fields = body_fields(request, types={"devices": list}, required=["devices"])  # an empty body too
            specs, problems = device_specs_from_json(fields["devices"])
        if len(specs) > settings.HUB_API_BULK_MAX_DEVICES:
            limit = settings.HUB_API_BULK_MAX_DEVICES
            raise ApiError(413, "too_many_devices", f"{len(specs)} devices; at most {limit} per request")
        actor = actor_in(request)
        problems = [*problems, *specs_out_of_scope(actor, specs)]
        try:
            created = devices_import(specs=specs, problems=problems)
        except DevicesRefused as exc:
            raise devices_refused(exc) from None
        audit_record(actor, "device.bulk_create", None, keys=[device.key for device, _ in created])
        devices = [{"key": device.key, "token": token} for device, token in created]
        return Response({"created": len(devices), "devices": devices}, status=201)


class DeviceAlertEvents(APIView):
    @extend_schema(
        operation_id="devices_alert_events",
        summary="A device's alert events (fired, resolved, acknowledged) in [start, end), newest first",
        parameters=[
            OpenApiParameter("start", int, description="ms since the epoch, UTC, inclusive (default: end − 24 h)"),
            OpenApiParameter("end", int, description="ms since the epoch, UTC, exclusive (default: now)"),
            OpenApiParameter(
                "limit", int, description="at most this many (default 100, at most HUB_HISTORY_MAX_LIMIT)"
            ),
        ],
        responses={200: shapes.AlertEvents, 404: shapes.Error, **shapes.ERRORS},
    )
    def get(self, request: Request, key: str) -> Response:
        device = device_or_404(actor_in(request), key)
        params = params_valid(HistoryParams(request.query_params))  # the history API's range and limit, its checks
        since, until = from_epoch_ms(params["start"]), from_epoch_ms(params["end"])
        events = alert_events_of_device(device_id=device.id, start=since, end=until, limit=params["limit"])
        return Response({"device": device.key, "start": params["start"], "end": params["end"], "events": events})
