"""The audit trail, for admins: who did what to which object, from where, when (docs/security.md)."""

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.audit import audit_events
from accounts.models import AuditEvent
from accounts.policy import Action
from accounts.requests import actor_in
from api import shapes
from api.errors import ApiError
from api.params import AuditFilter, params_valid
from api.rest import Pages
from core.epoch import epoch_ms, from_epoch_ms


def audit_event_summary(event: AuditEvent) -> dict:
    """An event as the API lists it."""
    return {
        "id": event.id,
        "at": epoch_ms(event.at),
        "actor_kind": event.actor_kind,
        "actor": event.actor,
        "token_id": event.token_id,
        "action": event.action,
        "object_type": event.object_type,
        "object_id": event.object_id,
        "address": event.address,
        "detail": event.detail,
    }


class AuditList(APIView):
    policy = {"GET": Action.ADMINISTER}
    pagination_class = Pages

    @extend_schema(
        operation_id="audit_list",
        summary="The audit trail, newest first (admins only)",
        parameters=[
            OpenApiParameter("actor", str, description="a username or a device key, exact"),
            OpenApiParameter("action", str, description="exact (device.delete), or a prefix ending in . (device.)"),
            OpenApiParameter("object_type", str, description="e.g. device, alertrule"),
            OpenApiParameter("object_id", str, description="a device's key, else the object's id"),
            OpenApiParameter("start", int, description="ms since the epoch, UTC, inclusive"),
            OpenApiParameter("end", int, description="ms since the epoch, UTC, exclusive"),
        ],
        responses={200: shapes.AuditEvent(many=True), **shapes.ERRORS},
    )
    def get(self, request: Request) -> Response:
        # Also the permission class's job (`policy`): asked here too, so the log never rests on one guard.
        if not actor_in(request).may(Action.ADMINISTER):
            raise ApiError(403, "forbidden", "the audit log is for admins")
        params = params_valid(AuditFilter(request.query_params))
        start, end = params.pop("start"), params.pop("end")
        events = audit_events(
            **params,
            start=from_epoch_ms(start) if start is not None else None,
            end=from_epoch_ms(end) if end is not None else None,
        )
        paginator = Pages()
        page = paginator.paginate_queryset(events, request, view=self)
        return paginator.get_paginated_response([audit_event_summary(event) for event in page])
