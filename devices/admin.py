from django import forms
from django.contrib import admin

from devices.labels import labels_parse, labels_text
from devices.models import Device


class DeviceForm(forms.ModelForm):
    """Labels edited as text, `site=north, model=tx-200` (validated by devices/labels.py)."""

    labels = forms.CharField(
        required=False, help_text="name=value pairs, comma-separated, e.g. site=north, model=tx-200"
    )

    class Meta:
        model = Device
        fields = ("key", "name", "labels")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["labels"] = labels_text(self.instance.labels)

    def clean_labels(self) -> dict[str, str]:
        return labels_parse(self.cleaned_data["labels"] or "")


@admin.register(Device)
class DeviceAdmin(admin.ModelAdmin):
    """Lists devices; the token hash is never shown (tokens are issued by createdevice/rotatetoken)."""

    form = DeviceForm
    list_display = ("key", "name", "label_list", "created_at", "last_seen")
    search_fields = ("key", "name")
    fields = ("key", "name", "labels", "created_at", "last_seen")
    readonly_fields = ("created_at", "last_seen")

    def has_add_permission(self, request) -> bool:  # tokens must be shown once: use createdevice
        return False

    @admin.display(description="labels")
    def label_list(self, device: Device) -> str:
        return labels_text(device.labels)
