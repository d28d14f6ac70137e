from django.contrib import admin

from alerts.models import AlertEvent, AlertRule, AlertState, WebhookDelivery


@admin.register(AlertRule)
class AlertRuleAdmin(admin.ModelAdmin):
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


@admin.register(AlertState)
class AlertStateAdmin(admin.ModelAdmin):
    list_display = ("rule", "device", "state", "fired_at", "value", "acknowledged_by")
    list_filter = ("state",)


@admin.register(AlertEvent)
class AlertEventAdmin(admin.ModelAdmin):
    list_display = ("at", "type", "rule", "device", "value", "severity", "by")
    list_filter = ("type", "severity")


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ("event", "url", "status", "attempts", "next_attempt_at", "last_error")
    list_filter = ("status",)
