"""The device registry."""

from django.core.exceptions import ValidationError
from django.db import models


class Device(models.Model):
    """A device that sends telemetry; its access token is stored only as a SHA-256 hash."""

    key = models.SlugField(max_length=64, unique=True, help_text="Stable identifier used in topics and URLs.")
    name = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_seen = models.DateTimeField(null=True, blank=True)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    # The same token hashed for the MQTT broker's password file (devices/tokens.py, docs/mqtt.md).
    broker_hash = models.CharField(max_length=128, blank=True, editable=False)
    # name -> value, both strings (devices/labels.py validates; device_labels_set writes).
    labels = models.JSONField(default=dict, db_default={}, blank=True)  # the default in SQL too: raw inserts (benches)

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.name or self.key

    def clean(self) -> None:
        from devices.labels import labels_problems

        if problems := labels_problems(self.labels):
            raise ValidationError({"labels": problems})


class ProvisioningProfile(models.Model):
    """Lets devices register themselves (POST /api/v1/provision): a device that knows the profile's key and
    secret, and whose own key matches the pattern, gets a token once. The secret is stored only as a hash."""

    key = models.SlugField(max_length=64, unique=True)
    key_pattern = models.CharField(max_length=100, default="*", help_text="shell-style pattern over device keys")
    labels = models.JSONField(default=dict, blank=True)  # given to every device it provisions
    secret_hash = models.CharField(max_length=64, unique=True, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    max_devices = models.PositiveIntegerField(null=True, blank=True)  # None: no limit
    provisioned = models.PositiveIntegerField(default=0)  # devices it has provisioned so far
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.key
