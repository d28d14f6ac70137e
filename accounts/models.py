"""Roles are Django groups holding the permissions below (accounts/migrations/0002); scopes are label selectors
given to a user or a group; the audit trail records who did what."""

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models


class Access(models.Model):  # noqa: DJ008 - never shown: it has no rows
    """No table: the holder of the three permissions the roles are made of, so the admin and the API agree."""

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [
            ("view_fleet", "See devices, history, CSV, live streams; use the read API"),
            ("operate_fleet", "Change devices, labels, device tokens, alert rules, acknowledge, provisioning"),
            ("administer_hub", "Manage users, roles and scopes, webhook destinations, others' API tokens, audit"),
        ]


class LabelScope(models.Model):
    """One label selector (`site=north` or `site=north,model=tx`) limiting a user, or every member of a group, to
    the devices it matches; several selectors of one person: any matches."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="label_scopes"
    )
    group = models.ForeignKey(Group, null=True, blank=True, on_delete=models.CASCADE, related_name="label_scopes")
    selector = models.CharField(max_length=200, help_text="name=value pairs that must all match, e.g. site=north")

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(user__isnull=False, group__isnull=True)
                | models.Q(user__isnull=True, group__isnull=False),
                name="label_scope_of_user_or_group",
            )
        ]

    def __str__(self) -> str:
        return self.selector

    def clean(self) -> None:
        from accounts.scopes import selector_parse

        selector_parse(self.selector)  # ValidationError naming the bad part


class AuditEvent(models.Model):
    """Who (a user, an API token of one, a device or the hub itself) did what to which object, from where, when."""

    class ActorKind(models.TextChoices):
        USER = "user"
        TOKEN = "token"  # noqa: S105 - an actor's kind, not a secret
        DEVICE = "device"
        SYSTEM = "system"

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor_kind = models.CharField(max_length=8, choices=ActorKind.choices)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    actor = models.CharField(max_length=150, blank=True, help_text="the username (or device key) at the time")
    token_id = models.BigIntegerField(null=True, blank=True)
    action = models.CharField(max_length=40, db_index=True)
    object_type = models.CharField(max_length=40, blank=True)
    object_id = models.CharField(max_length=200, blank=True)
    address = models.CharField(max_length=45, blank=True)
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["object_type", "object_id"])]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action} {self.object_type} {self.object_id}"
