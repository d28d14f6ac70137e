"""The admin site's pages of the accounts app; each section is one model's."""

from django.contrib import admin
from django.http import HttpRequest

from accounts import registry_admin  # noqa: F401 - devices and people (a module of its own)
from accounts.models import AuditEvent
from accounts.policy import Action
from accounts.requests import actor_in

# The audit trail -------------------------------------------------------------------------------------------


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """The trail, read-only: shown to admins (the policy's role, not Django's model permissions), changed by
    nobody, pruned only by HUB_AUDIT_RETENTION_DAYS."""

    list_display = ("at", "actor", "action", "object_type", "object_id", "address")
    list_filter = ("action", "actor_kind", "at")
    search_fields = ("actor", "object_id", "action")
    date_hierarchy = "at"

    def has_module_permission(self, request: HttpRequest) -> bool:
        return actor_in(request).may(Action.ADMINISTER)

    def has_view_permission(self, request: HttpRequest, obj: AuditEvent | None = None) -> bool:
        return actor_in(request).may(Action.ADMINISTER)

    # A trail anyone can edit proves nothing: not even a superuser adds, changes or deletes an event.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AuditEvent | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AuditEvent | None = None) -> bool:
        return False
