"""Read side of alerts for pages: open alerts, a device's rules and history."""

from django.db.models import QuerySet

from alerts.models import AlertEvent, AlertRule, AlertState, State

_SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


def alerts_open() -> QuerySet[AlertState]:
    return AlertState.objects.filter(state=State.FIRING).select_related("rule", "device", "acknowledged_by")


def alerts_open_by_device() -> dict[int, str]:
    """device id → the highest severity firing on it (for the fleet page's marks)."""
    worst: dict[int, str] = {}
    for device_id, severity in alerts_open().values_list("device_id", "rule__severity"):
        if device_id not in worst or _SEVERITY_ORDER[severity] < _SEVERITY_ORDER[worst[device_id]]:
            worst[device_id] = severity
    return worst


def alert_thresholds_for_device(*, device_id: int, device_key: str) -> list[dict]:
    """Threshold lines to draw on a device's charts: key, value, severity."""
    from alerts.rules import rule_spec

    lines = []
    for rule in AlertRule.objects.filter(enabled=True, kind="threshold"):
        spec = rule_spec(rule)
        if spec.applies_to(device_id, device_key):
            for value in (spec.low, spec.high):
                if value is not None:
                    lines.append({"key": spec.key, "value": value, "severity": spec.severity, "rule": spec.name})
    return lines


def alert_history(*, device_id: int, limit: int = 50) -> QuerySet[AlertEvent]:
    return AlertEvent.objects.filter(device_id=device_id).select_related("rule", "by")[:limit]
