"""Alerts in the admin, under the policy (accounts/adminsite.py): rules by operators (the page's form: only admins
set webhook URLs), states and events of the devices one sees, webhook deliveries for admins."""

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from accounts.adminsite import PolicyAdmin
from accounts.policy import Action
from accounts.requests import actor_in
from accounts.scopes import scope_text
from alerts.forms import AlertRuleForm
from alerts.models import AlertEvent, AlertRule, AlertState, WebhookDelivery
from alerts.selectors import rules_visible


@admin.register(AlertRule)
class AlertRuleAdmin(PolicyAdmin):
    form = AlertRuleForm
    audited = "rule"
    readonly_fields = ("scope",)
    list_display = (
        "name",
        "enabled",
        "kind",
        "device",
        "device_pattern",
        "device_labels",
        "key",
        "condition",
        "threshold",
        "severity",
    )
    list_filter = ("enabled", "kind", "severity")
    search_fields = ("name", "key", "device__key", "device_pattern")

    def get_queryset(self, request: HttpRequest) -> QuerySet[AlertRule]:
        return rules_visible(actor_in(request))

    def get_form(self, request: HttpRequest, obj=None, change: bool = False, **kwargs):
        form = super().get_form(request, obj, change, **kwargs)
        actor = actor_in(request)

        class Bound(form):  # type: ignore[valid-type, misc]
            def __init__(self, *args, **kwargs) -> None:
                super().__init__(*args, actor=actor, **kwargs)
                if self.instance.pk is None:
                    self.instance.scope = scope_text(actor.scope)

        return Bound


@admin.register(AlertState)
class AlertStateAdmin(PolicyAdmin):
    scope = "device__labels"
    list_display = ("rule", "device", "state", "fired_at", "value", "acknowledged_by")
    list_filter = ("state",)


@admin.register(AlertEvent)
class AlertEventAdmin(PolicyAdmin):
    scope = "device__labels"
    list_display = ("at", "type", "rule", "device", "value", "severity", "by")
    list_filter = ("type", "severity")


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(PolicyAdmin):
    view = change = Action.ADMINISTER
    list_display = ("event", "url", "status", "attempts", "next_attempt_at", "last_error")
    list_filter = ("status",)
