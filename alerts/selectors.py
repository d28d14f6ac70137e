"""Read side of alerts for pages and the API: open alerts, rules, a device's rules and history."""

from datetime import datetime

from django.db.models import QuerySet

from accounts.policy import Actor, Role
from accounts.scopes import scope_of
from alerts.models import AlertEvent, AlertRule, AlertState, State, alert_event_payload
from core.epoch import epoch_ms
from core.protocol import AlertEventPayload

SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}  # worst first


def rules_visible(actor: Actor) -> QuerySet[AlertRule]:
    """The rules an actor sees and may change: those whose scope theirs covers (a fleet-wide rule is only for
    the unscoped), of a device they see. Rules are few: decided here, one query for the ids."""
    rules = AlertRule.objects.select_related("device")
    if not actor.scope:
        return rules if actor.role > Role.NONE else rules.none()
    ids = [
        rule.id
        for rule in rules
        if actor.covers(scope_of(rule.scope)) and (rule.device is None or actor.sees(rule.device.labels))
    ]
    return rules.filter(id__in=ids)


def alerts_open() -> QuerySet[AlertState]:
    return AlertState.objects.filter(state=State.FIRING).select_related("rule", "device", "acknowledged_by")


def alerts_open_by_device() -> dict[int, str]:
    """device id → the highest severity firing on it (for the fleet page's marks)."""
    worst: dict[int, str] = {}
    for device_id, severity in alerts_open().values_list("device_id", "rule__severity"):
        if device_id not in worst or SEVERITY_ORDER[severity] < SEVERITY_ORDER[worst[device_id]]:
            worst[device_id] = severity
    return worst


def alert_thresholds_for_device(*, device_id: int, device_key: str, labels: dict[str, str] | None = None) -> list[dict]:
    """Threshold lines to draw on a device's charts: key, value, severity."""
    from alerts.rules import rule_spec

    lines = []
    for rule in AlertRule.objects.filter(enabled=True, kind="threshold"):
        spec = rule_spec(rule)
        if spec.applies_to(device_id, device_key, labels):
            for value in (spec.low, spec.high):
                if value is not None:
                    lines.append({"key": spec.key, "value": value, "severity": spec.severity, "rule": spec.name})
    return lines


def alert_events_recent(*, device_id: int, limit: int = 50) -> list[AlertEventPayload]:
    """A device's newest alert events, newest first, in the shape they travel live."""
    events = AlertEvent.objects.filter(device_id=device_id).select_related("rule", "device")[:limit]
    return [
        alert_event_payload(
            event_id=e.id,
            kind=e.type,
            rule=e.rule,
            device_key=e.device.key,
            at_ms=epoch_ms(e.at),
            value=e.value,
        )
        for e in events
    ]


def firing_on_device(*, device_id: int) -> list[dict]:
    """The rules firing on a device now: id, name, key, severity (the device page's banner)."""
    return [
        {"id": rule_id, "name": name, "key": key, "severity": severity}
        for rule_id, name, key, severity in alerts_open()
        .filter(device_id=device_id)
        .values_list("rule_id", "rule__name", "rule__key", "rule__severity")
    ]


def alert_events_of_device(*, device_id: int, start: datetime, end: datetime, limit: int) -> list[dict]:
    """A device's alert events in [start, end), newest first, at most `limit`, in the shape they travel live
    plus who acknowledged."""
    events = (
        AlertEvent.objects.filter(device_id=device_id, at__gte=start, at__lt=end)
        .select_related("rule", "device", "by")
        .order_by("-at", "-id")[:limit]
    )
    return [
        {
            **alert_event_payload(
                event_id=e.id, kind=e.type, rule=e.rule, device_key=e.device.key, at_ms=epoch_ms(e.at), value=e.value
            ),
            "by": e.by.get_username() if e.by else None,
        }
        for e in events
    ]


def alert_state_summary(state: AlertState) -> dict:
    """A firing (or other) alert as the API shows it: rule, device, since, value, acknowledgement."""
    return {
        "id": state.id,
        "state": state.state,
        "rule": {"id": state.rule.id, "name": state.rule.name, "key": state.rule.key, "severity": state.rule.severity},
        "device": state.device.key,
        "fired_at": epoch_ms(state.fired_at) if state.fired_at else None,
        "value": state.value,
        "acknowledged_by": state.acknowledged_by.get_username() if state.acknowledged_by else None,
        "acknowledged_at": epoch_ms(state.acknowledged_at) if state.acknowledged_at else None,
    }


RULE_FIELDS = (
    "name", "enabled", "device_pattern", "device_labels", "key", "kind", "condition", "threshold", "threshold_high",
    "duration_seconds", "hysteresis", "no_data_seconds", "severity", "webhook_url",
)  # fmt: skip


def alert_rule_summary(rule: AlertRule) -> dict:
    """A rule as the API shows and takes it: its device by key."""
    return {
        "id": rule.id,
        "device": rule.device.key if rule.device is not None else None,  # no query without a device id
        **{field: getattr(rule, field) for field in RULE_FIELDS},
        "scope": rule.scope,
        "created": epoch_ms(rule.created_at),
    }
