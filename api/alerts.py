"""Alert rules (create, list, get, change, delete: validated by the rules page's form, with its messages) and
alert states (what is firing; acknowledge)."""

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.audit import audit_record
from accounts.policy import Actor
from accounts.requests import actor_in
from alerts.models import AlertRule, AlertState
from alerts.selectors import RULE_FIELDS, alert_rule_summary, alert_state_summary, alerts_open, rules_visible
from alerts.services import RuleRefused, alert_acknowledge, alert_rule_save
from api import shapes
from api.errors import ApiError, invalid
from api.rest import Pages, body_fields

# Types are the form's to check (its messages are the page's); the body may hold only the rule's fields.
RULE_BODY = dict.fromkeys(("device", *RULE_FIELDS), object)


def rule_or_404(actor: Actor, rule_id: int) -> AlertRule:
    rule = rules_visible(actor).filter(id=rule_id).first()
    if rule is None:
        raise ApiError(404, "unknown_rule", f"no alert rule {rule_id}")
    return rule


def rule_saved(request: Request, rule: AlertRule | None = None) -> AlertRule:
    values, actor = body_fields(request, types=RULE_BODY), actor_in(request)
    try:
        saved = alert_rule_save(values=values, rule=rule, actor=actor)
    except RuleRefused as exc:
        raise invalid(exc.errors) from None
    audit_record(actor, "rule.create" if rule is None else "rule.change", saved, **values)
    return saved


class RuleList(APIView):
    pagination_class = Pages

    @extend_schema(operation_id="alert_rules_list", responses={200: shapes.AlertRule(many=True), **shapes.ERRORS})
    def get(self, request: Request) -> Response:
        paginator = Pages()
        rules = paginator.paginate_queryset(rules_visible(actor_in(request)).order_by("name", "id"), request)
        return paginator.get_paginated_response([alert_rule_summary(rule) for rule in rules])

    @extend_schema(
        operation_id="alert_rules_create",
        summary="Create a rule; refused with the rules page's messages",
        request=shapes.AlertRule,
        responses={201: shapes.AlertRule, **shapes.ERRORS},
    )
    def post(self, request: Request) -> Response:
        return Response(alert_rule_summary(rule_saved(request)), status=201)


class RuleDetail(APIView):
    @extend_schema(
        operation_id="alert_rules_get", responses={200: shapes.AlertRule, 404: shapes.Error, **shapes.ERRORS}
    )
    def get(self, request: Request, rule_id: int) -> Response:
        return Response(alert_rule_summary(rule_or_404(actor_in(request), rule_id)))

    @extend_schema(
        operation_id="alert_rules_update",
        summary="Change the given fields of a rule (the whole rule is validated again)",
        request=shapes.AlertRule,
        responses={200: shapes.AlertRule, 404: shapes.Error, **shapes.ERRORS},
    )
    def patch(self, request: Request, rule_id: int) -> Response:
        return Response(alert_rule_summary(rule_saved(request, rule_or_404(actor_in(request), rule_id))))

    @extend_schema(operation_id="alert_rules_delete", responses={204: None, 404: shapes.Error, **shapes.ERRORS})
    def delete(self, request: Request, rule_id: int) -> Response:
        actor = actor_in(request)
        rule = rule_or_404(actor, rule_id)
        audit_record(actor, "rule.delete", rule, name=rule.name)
        rule.delete()
        return Response(status=204)


class FiringList(APIView):
    pagination_class = Pages

    @extend_schema(
        operation_id="alerts_firing",
        summary="What is firing now, newest first",
        parameters=[OpenApiParameter("device", str, description="only this device's (its key)")],
        responses={200: shapes.AlertState(many=True), **shapes.ERRORS},
    )
    def get(self, request: Request) -> Response:
        firing = actor_in(request).scoped(alerts_open(), "device__labels").order_by("-fired_at", "-id")
        if device := request.query_params.get("device"):
            firing = firing.filter(device__key=device)
        paginator = Pages()
        return paginator.get_paginated_response(
            [alert_state_summary(state) for state in paginator.paginate_queryset(firing, request)]
        )


class Acknowledge(APIView):
    @extend_schema(
        operation_id="alerts_acknowledge",
        summary="Acknowledge a firing alert (recorded with the operator)",
        request=None,
        responses={200: shapes.AlertState, 404: shapes.Error, 409: shapes.Error, **shapes.ERRORS},
    )
    def post(self, request: Request, state_id: int) -> Response:
        actor = actor_in(request)
        if not actor.scoped(AlertState.objects.filter(id=state_id), "device__labels").exists():
            raise ApiError(404, "unknown_alert", f"no alert {state_id}")
        if not alert_acknowledge(state_id=state_id, user=request.user):
            raise ApiError(409, "not_acknowledgeable", "that alert is no longer firing or was already acknowledged")
        state = AlertState.objects.select_related("rule", "device", "acknowledged_by").get(id=state_id)
        audit_record(actor, "alert.acknowledge", state, rule=state.rule.name, device=state.device.key)
        return Response(alert_state_summary(state))
