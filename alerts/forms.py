from django import forms

from alerts.models import AlertRule


class AlertRuleForm(forms.ModelForm):
    """Validation lives in AlertRule.clean (alerts.rules.rule_problems), shared with the admin."""

    webhook_url = forms.URLField(required=False, assume_scheme="https", help_text="empty: HUB_ALERT_WEBHOOK_URL")

    class Meta:
        model = AlertRule
        fields = [
            "name", "enabled", "device", "device_pattern", "device_labels", "key", "kind", "condition", "threshold",
            "threshold_high", "duration_seconds", "hysteresis", "no_data_seconds", "severity", "webhook_url",
        ]  # fmt: skip
