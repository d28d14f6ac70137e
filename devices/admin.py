from django.contrib import admin

from devices.models import Device


@admin.register(Device)
class DeviceAdmin(admin.ModelAdmin):
    """Lists devices; the token hash is never shown (tokens are issued by createdevice/rotatetoken)."""

    list_display = ("key", "name", "created_at", "last_seen")
    search_fields = ("key", "name")
    fields = ("key", "name", "created_at", "last_seen")
    readonly_fields = ("created_at", "last_seen")

    def has_add_permission(self, request) -> bool:  # tokens must be shown once: use createdevice
        return False
