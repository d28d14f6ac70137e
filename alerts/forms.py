from django import forms

from alerts.models import AlertRule


class AlertRuleForm(forms.ModelForm):
    """Validation lives in AlertRule.clean (alerts.rules.rule_problems), shared with the admin; only staff may
    point a rule at a URL of their own (the hub POSTs there: docs/alerts.md, "Where webhooks may go")."""

    webhook_url = forms.URLField(required=False, assume_scheme="https", help_text="empty: HUB_ALERT_WEBHOOK_URL")

    def __init__(self, *args, user=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.user = user

    def clean_webhook_url(self) -> str:
        url = self.cleaned_data["webhook_url"]
        if url and not (self.user is not None and self.user.is_staff):
            raise forms.ValidationError("only staff may set a rule's webhook URL; empty uses HUB_ALERT_WEBHOOK_URL")
        return url

    class Meta:
        model = AlertRule
        fields = [
            "name", "enabled", "device", "device_pattern", "device_labels", "key", "kind", "condition", "threshold",
            "threshold_high", "duration_seconds", "hysteresis", "no_data_seconds", "severity", "webhook_url",
        ]  # fmt: skip
