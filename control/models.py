"""Talking back to devices: their attributes (client, shared, server) and the commands (RPC) sent to them."""

from django.db import models

from devices.models import Device


class Attribute(models.Model):
    """One attribute of a device. *client*: reported by the device (firmware, its current config); *shared*: set
    by operators and delivered to the device; *server*: the operators' own, never sent to the device."""

    class Scope(models.TextChoices):
        CLIENT = "client"
        SHARED = "shared"
        SERVER = "server"

    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="attributes")
    scope = models.CharField(max_length=6, choices=Scope.choices)
    key = models.CharField(max_length=64)
    value = models.JSONField()
    updated_at = models.DateTimeField()
    updated_by = models.CharField(max_length=150)  # a username, or "device"

    class Meta:
        constraints = [models.UniqueConstraint(fields=["device", "scope", "key"], name="attribute_once")]
        indexes = [models.Index(fields=["scope", "updated_at"], name="attribute_changed")]
        ordering = ["scope", "key"]

    def __str__(self) -> str:
        return f"{self.scope}:{self.key}"


class Command(models.Model):
    """A command (server-side RPC) for a device, from queued to its final state; kept for the history."""

    class State(models.TextChoices):
        QUEUED = "queued"  # stored, not yet handed to the device
        SENT = "sent"  # handed to the device's transport, receipt not yet confirmed
        DELIVERED = "delivered"  # the device has it (one-way: final)
        SUCCESSFUL = "successful"  # a two-way command's response arrived
        FAILED = "failed"  # the device answered with an error
        TIMED_OUT = "timed_out"  # delivered, but no response within its timeout
        EXPIRED = "expired"  # never delivered before it expired

    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="commands")
    method = models.CharField(max_length=128)
    params = models.JSONField(null=True, blank=True)  # any JSON, null included
    two_way = models.BooleanField(default=True)
    persistent = models.BooleanField(default=False)
    state = models.CharField(max_length=10, choices=State.choices, default=State.QUEUED)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()  # undelivered by then: expired; a two-way one unanswered: timed out
    timeout_ms = models.PositiveIntegerField()  # how long a two-way command waits for its response once delivered
    sent_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    answered_at = models.DateTimeField(null=True, blank=True)
    answer_by = models.DateTimeField(null=True, blank=True)  # a delivered two-way command's deadline for its response
    response = models.JSONField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)  # times handed to the device (at least once)
    created_by = models.CharField(max_length=150)

    class Meta:
        indexes = [
            models.Index(fields=["device", "state"], name="command_device_state"),
            models.Index(fields=["state", "expires_at"], name="command_due"),
        ]
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.method} #{self.id}"
