"""The admin's pages for devices and people, under the policy (accounts/adminsite.py). Devices: operators, only
those of their scope, labels kept within it. People, their roles (groups) and scopes: admins only."""

from django import forms
from django.contrib import admin
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group, User
from django.http import HttpRequest

from accounts.adminsite import PolicyAdmin
from accounts.models import LabelScope
from accounts.policy import NOBODY, Action, Actor
from accounts.requests import actor_in
from accounts.scopes import scope_text
from devices.labels import labels_parse, labels_text
from devices.models import Device, ProvisioningProfile


class DeviceForm(forms.ModelForm):
    """Labels edited as text, `site=north, model=tx-200` (validated by devices/labels.py), kept within the
    editor's scope."""

    labels = forms.CharField(
        required=False, help_text="name=value pairs, comma-separated, e.g. site=north, model=tx-200"
    )
    actor: Actor = NOBODY

    class Meta:
        model = Device
        fields = ("key", "name", "labels")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["labels"] = labels_text(self.instance.labels)

    def clean_labels(self) -> dict[str, str]:
        labels = labels_parse(self.cleaned_data["labels"] or "")
        if not self.actor.sees(labels):
            raise forms.ValidationError(f"your devices carry {' or '.join(scope_text(self.actor.scope))}")
        return labels


@admin.register(Device)
class DeviceAdmin(PolicyAdmin):
    """Lists devices; the token hash is never shown (tokens are issued by createdevice/rotatetoken)."""

    form = DeviceForm
    scope = "labels"
    audited = "device"
    list_display = ("key", "name", "label_list", "created_at", "last_seen")
    search_fields = ("key", "name")
    fields = ("key", "name", "labels", "created_at", "last_seen")
    readonly_fields = ("created_at", "last_seen")

    def get_form(self, request: HttpRequest, obj=None, change: bool = False, **kwargs):
        form = super().get_form(request, obj, change, **kwargs)
        return type(form.__name__, (form,), {"actor": actor_in(request)})

    def has_add_permission(self, request: HttpRequest) -> bool:  # tokens must be shown once: use createdevice
        return False

    @admin.display(description="labels")
    def label_list(self, device: Device) -> str:
        return labels_text(device.labels)


@admin.register(ProvisioningProfile)
class ProvisioningProfileAdmin(PolicyAdmin):
    """Profiles are made through the API or `manage.py` (their secret is shown once); here seen and deleted."""

    audited = "profile"
    list_display = ("key", "key_pattern", "labels", "expires_at", "max_devices", "provisioned")
    readonly_fields = ("key", "key_pattern", "labels", "expires_at", "max_devices", "provisioned", "created_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_queryset(self, request: HttpRequest):
        actor = actor_in(request)
        keys = [p.key for p in ProvisioningProfile.objects.all() if actor.sees(p.labels)]
        return super().get_queryset(request).filter(key__in=keys)


class LabelScopeInline(admin.TabularInline):
    model = LabelScope
    extra = 1
    fields = ("selector",)


admin.site.unregister(User)
admin.site.unregister(Group)


@admin.register(User)
class HubUserAdmin(PolicyAdmin, UserAdmin):
    """People: their role is their group (viewer, operator, admin), their scope the selectors below."""

    view = change = Action.ADMINISTER
    audited = "user"
    inlines = [LabelScopeInline]
    list_display = ("username", "email", "is_active", "role_list", "last_login")

    @admin.display(description="groups")
    def role_list(self, user: User) -> str:
        return ", ".join(sorted(group.name for group in user.groups.all()))


@admin.register(Group)
class HubGroupAdmin(PolicyAdmin, GroupAdmin):
    """Groups: the three roles, and teams whose scope (the selectors below) their members share."""

    view = change = Action.ADMINISTER
    audited = "group"
    inlines = [LabelScopeInline]
