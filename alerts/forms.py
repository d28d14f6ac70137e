from django import forms

from accounts.policy import NOBODY, Action, Actor
from alerts.models import AlertRule

# The rules page's new rule starts with a duration (docs/alerts.md, "Flapping"): with neither a duration nor a
# hysteresis a rule on a noisy value fired and resolved 6 times in 4 minutes (issue 25). Page only: the API keeps
# the model's defaults (docs/api.md).
PAGE_DEFAULTS = {"duration_seconds": 60}


class AlertRuleForm(forms.ModelForm):
    """Validation lives in AlertRule.clean (alerts.rules.rule_problems), shared with the admin; only admins may
    point a rule at a URL of their own (the hub POSTs there: docs/alerts.md, "Where webhooks may go"); anyone
    who may change the rule keeps the URL it has (and cannot clear one an admin set)."""

    webhook_url = forms.URLField(required=False, assume_scheme="https", help_text="empty: HUB_ALERT_WEBHOOK_URL")

    def __init__(self, *args, actor: Actor = NOBODY, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.actor = actor
        # Only the actor's devices to choose from (the API names one by key: an unseen one is "not one of the
        # available choices", as a device that does not exist).
        self.fields["device"].queryset = actor.devices()  # type: ignore[attr-defined]

    def clean_webhook_url(self) -> str:
        url = self.cleaned_data["webhook_url"]
        if url != self.instance.webhook_url and not self.actor.may(Action.ADMINISTER):  # set, changed or cleared
            raise forms.ValidationError("only admins may set a rule's webhook URL; empty uses HUB_ALERT_WEBHOOK_URL")
        return url

    class Meta:
        model = AlertRule
        fields = [
            "name", "enabled", "device", "device_pattern", "device_labels", "key", "kind", "condition", "threshold",
            "threshold_high", "duration_seconds", "hysteresis", "no_data_seconds", "severity", "webhook_url",
        ]  # fmt: skip
