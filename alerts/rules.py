"""Rule validation and snapshots: a rule with an unknown key or an impossible condition is refused."""

import re

from django.core.exceptions import ValidationError

from accounts.scopes import scope_of, scoped
from alerts.destinations import webhook_url_problem
from alerts.evaluation import RuleSpec
from alerts.models import AlertRule, Condition, Kind
from core.keys import is_key
from devices.labels import devices_labelled, labels_parse
from devices.models import Device
from storage.models import LatestValue


def rule_problems(rule: AlertRule) -> dict[str, str]:
    """Field → message for everything wrong with `rule` (empty when it is valid)."""
    problems: dict[str, str] = {}
    if rule.device_id and rule.device_pattern:
        problems["device_pattern"] = "choose one device or a pattern, not both"
    if rule.webhook_url and (problem := webhook_url_problem(rule.webhook_url)):
        problems["webhook_url"] = problem
    if rule.device_id and rule.device_labels:
        problems["device_labels"] = "choose one device or labels, not both"
    try:
        labels_parse(rule.device_labels)
    except ValidationError as exc:
        problems["device_labels"] = "; ".join(exc.messages)
        return problems
    if rule.kind == Kind.OFFLINE:
        if rule.no_data_seconds <= 0:
            problems["no_data_seconds"] = "an offline rule needs the silence (seconds) after which it fires"
        return problems
    if not is_key(rule.key or ""):
        problems["key"] = "a reading key: 1-64 letters, digits, '_', '.', '-'"
    elif not _key_reported(rule):
        problems["key"] = f"no device in this rule's scope has reported the key {rule.key!r}"
    if rule.kind == Kind.NO_DATA:
        if rule.no_data_seconds <= 0:
            problems["no_data_seconds"] = "a no-data rule needs the silence (seconds) after which it fires"
        return problems
    if rule.condition not in Condition.values:
        problems["condition"] = "choose >, >=, <, <= or outside"
    if rule.threshold is None:
        problems["threshold"] = "a threshold rule needs a threshold"
    if rule.hysteresis < 0:
        problems["hysteresis"] = "the hysteresis cannot be negative"
    if rule.condition == Condition.OUTSIDE and rule.threshold is not None:
        if rule.threshold_high is None or rule.threshold_high <= rule.threshold:
            problems["threshold_high"] = "the band's high edge must be above its low edge"
        elif 2 * rule.hysteresis >= rule.threshold_high - rule.threshold:
            problems["hysteresis"] = "the hysteresis must be less than half the band, or the alert never clears"
    return problems


def _key_reported(rule: AlertRule) -> bool:
    latest = LatestValue.objects.filter(key=rule.key)
    if rule.device_id:
        return latest.filter(device_id=rule.device_id).exists()
    reporting = scoped(Device.objects.filter(id__in=latest.values("device_id")), scope_of(rule.scope))
    if not rule.device_pattern and not rule.device_labels:
        return reporting.exists()
    pattern = re.compile(_glob_to_regex(rule.device_pattern or "*"))
    covered = devices_labelled(reporting, labels_parse(rule.device_labels))
    return any(pattern.fullmatch(k) for k in covered.values_list("key", flat=True))


def _glob_to_regex(pattern: str) -> str:
    from fnmatch import translate

    return translate(pattern)


def rule_spec(rule: AlertRule) -> RuleSpec:
    return RuleSpec(
        id=rule.id,
        name=rule.name,
        kind=rule.kind,
        key=rule.key,
        condition=rule.condition,
        low=rule.threshold,
        high=rule.threshold_high,
        duration_ms=rule.duration_seconds * 1000,
        hysteresis=rule.hysteresis,
        no_data_ms=rule.no_data_seconds * 1000,
        severity=rule.severity,
        device_id=rule.device_id,
        pattern=rule.device_pattern,
        webhook_url=rule.webhook_url,
        labels=tuple(sorted(labels_parse(rule.device_labels).items())),
        scope=tuple(tuple(sorted(labels_parse(text).items())) for text in rule.scope),
    )
