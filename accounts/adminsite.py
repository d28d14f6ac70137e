"""The Django admin asks the policy too: who enters (operators and admins), which models each role may view or
change, and which rows (a scoped person's devices only); every save and delete goes to the audit trail."""

from django.contrib import admin
from django.db.models import Model, QuerySet
from django.http import HttpRequest

from accounts.audit import audit_record
from accounts.policy import Action
from accounts.requests import actor_in


class HubAdminSite(admin.AdminSite):
    site_header = "the hub: admin"

    def has_permission(self, request: HttpRequest) -> bool:
        """Operators and admins, not only `is_staff` users: the role decides, as everywhere else."""
        return request.user.is_active and actor_in(request).may(Action.OPERATE)


class PolicyAdmin(admin.ModelAdmin):
    """A model's admin under the policy: `view`, `change` (add, change, delete) the actions asked; `scope`: the
    path to the labels of the device each row belongs to (None: not a device's)."""

    view: Action = Action.OPERATE
    change: Action = Action.OPERATE
    scope: str | None = None
    audited: str = ""  # the audit trail's name of the object, e.g. "device"

    def _may(self, request: HttpRequest, action: Action) -> bool:
        return actor_in(request).may(action)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self._may(request, self.view)

    def has_view_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return self._may(request, self.view)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return self._may(request, self.change)

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return self._may(request, self.change)

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return self._may(request, self.change)

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        objects = super().get_queryset(request)
        return objects if self.scope is None else actor_in(request).scoped(objects, self.scope)

    def save_model(self, request: HttpRequest, obj: Model, form, change: bool) -> None:
        super().save_model(request, obj, form, change)
        name = self.audited or obj._meta.model_name
        changed = {field: str(form.cleaned_data.get(field))[:500] for field in form.changed_data}
        audit_record(actor_in(request), f"{name}.{'change' if change else 'create'}", obj, via="admin", **changed)

    def delete_model(self, request: HttpRequest, obj: Model) -> None:
        audit_record(actor_in(request), f"{self.audited or obj._meta.model_name}.delete", obj, via="admin")
        super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        for obj in queryset:
            audit_record(actor_in(request), f"{self.audited or obj._meta.model_name}.delete", obj, via="admin")
        super().delete_queryset(request, queryset)
