"""Alert rules, the state of each (rule, device), the event history and webhook deliveries."""

from typing import Protocol

from django.conf import settings
from django.db import models

from core.protocol import AlertEventPayload
from devices.models import Device


class Severity(models.TextChoices):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class Kind(models.TextChoices):
    THRESHOLD = "threshold", "threshold"
    NO_DATA = "no_data", "no reading of the key for a while"
    OFFLINE = "offline", "device offline"


class Condition(models.TextChoices):
    GT = "gt", ">"
    GE = "ge", ">="
    LT = "lt", "<"
    LE = "le", "<="
    OUTSIDE = "outside", "outside the band"


class AlertRule(models.Model):
    """A threshold or no-data rule over one device, or every device whose key matches a pattern and that carries
    the rule's labels."""

    name = models.CharField(max_length=200)
    enabled = models.BooleanField(default=True)
    device = models.ForeignKey(Device, null=True, blank=True, on_delete=models.CASCADE, related_name="alert_rules")
    device_pattern = models.CharField(
        max_length=100, blank=True, help_text="shell-style pattern over device keys, e.g. boiler-*; empty = all"
    )
    device_labels = models.CharField(
        max_length=200,
        blank=True,
        default="",  # in Python: a rule made in code (a test, the engine's spec) reads "" before it is saved
        db_default="",  # in SQL too: raw inserts (bench/alerts.py)
        help_text="only devices with these labels, e.g. site=north (comma-separated pairs must all match); "
        "combines with the pattern",
    )
    key = models.CharField(max_length=64, blank=True, help_text="reading key (not needed for offline rules)")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.THRESHOLD)
    condition = models.CharField(max_length=8, choices=Condition.choices, blank=True)
    threshold = models.FloatField(null=True, blank=True, help_text="the limit, or the band's low edge")
    threshold_high = models.FloatField(null=True, blank=True, help_text="the band's high edge (outside)")
    duration_seconds = models.PositiveIntegerField(
        default=0, help_text="fires only if every reading breaks it for this long"
    )
    hysteresis = models.FloatField(default=0.0, help_text="clears only this far back inside the limit")
    no_data_seconds = models.PositiveIntegerField(default=0, help_text="no-data and offline rules: silence that fires")
    severity = models.CharField(max_length=8, choices=Severity.choices, default=Severity.WARNING)
    webhook_url = models.URLField(blank=True, help_text="empty: HUB_ALERT_WEBHOOK_URL")
    # The label scope of who made it (selector texts, any matches; [] = every device): a scoped operator's rule
    # covers only their devices, and only people whose scope covers it see or change it (accounts/policy.py).
    scope = models.JSONField(default=list, blank=True, db_default=[])
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        from alerts.rules import rule_problems

        if problems := rule_problems(self):
            raise ValidationError(problems)


class State(models.TextChoices):
    OK = "ok"
    PENDING = "pending"
    FIRING = "firing"


class AlertState(models.Model):
    """Where one (rule, device) stands; survives restarts, so alerts are neither lost nor repeated."""

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="states")
    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="alert_states")
    state = models.CharField(max_length=8, choices=State.choices, default=State.OK)
    pending_since = models.DateTimeField(null=True, blank=True)  # ts of the first breaking reading
    fired_at = models.DateTimeField(null=True, blank=True)
    value = models.FloatField(null=True, blank=True)  # the value that triggered it
    updated_at = models.DateTimeField(auto_now=True)
    acknowledged_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    acknowledged_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["rule", "device"], name="alert_state_rule_device")]

    def __str__(self) -> str:
        return f"{self.rule} on {self.device}: {self.state}"


class AlertEvent(models.Model):
    """History: fired, resolved, acknowledged."""

    class Type(models.TextChoices):
        FIRED = "fired"
        RESOLVED = "resolved"
        ACKNOWLEDGED = "acknowledged"

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="events")
    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="alert_events")
    type = models.CharField(max_length=16, choices=Type.choices)
    at = models.DateTimeField()
    value = models.FloatField(null=True, blank=True)
    severity = models.CharField(max_length=8, choices=Severity.choices)
    by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["device", "-at"])]

    def __str__(self) -> str:
        return f"{self.type} {self.rule} on {self.device}"


class WebhookDelivery(models.Model):
    """One notification to one URL, retried with backoff, then recorded as failed."""

    class Status(models.TextChoices):
        PENDING = "pending"
        SENT = "sent"
        FAILED = "failed"

    event = models.ForeignKey(AlertEvent, on_delete=models.CASCADE, related_name="deliveries")
    url = models.URLField()
    payload = models.JSONField()
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    last_error = models.TextField(blank=True)

    class Meta:
        indexes = [models.Index(fields=["status", "next_attempt_at"])]

    def __str__(self) -> str:
        return f"{self.url} {self.status}"


class NamedRule(Protocol):
    """What an event says of its rule: an AlertRule, or the engine's RuleSpec."""

    @property
    def id(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def key(self) -> str: ...
    @property
    def severity(self) -> str: ...


def alert_event_payload(
    *, event_id: int, kind: str, rule: NamedRule, device_key: str, at_ms: int, value: float | None
) -> AlertEventPayload:
    """The JSON an alert event travels as: webhooks, the channel layer and the device page alike.
    `rule` is an AlertRule or anything with its id, name, key and severity (the engine's RuleSpec)."""
    return AlertEventPayload(
        id=event_id,
        type=kind,
        rule={"id": rule.id, "name": rule.name, "key": rule.key, "severity": rule.severity},
        device=device_key,
        at=at_ms,
        value=value,
    )
