"""Operator API tokens for scripts (sessions cover the browser)."""

from django.conf import settings
from django.db import models


class Scope(models.TextChoices):
    """What a token may do: read everything, or also write (create, change, delete, acknowledge)."""

    READ = "read", "read-only"
    WRITE = "write", "read-write"


class ApiToken(models.Model):
    """A bearer token for scripts; stored as a SHA-256 hash, shown once, scoped, revocable."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    # Tokens issued before scopes existed could only read the history API: they stay read-only.
    scope = models.CharField(max_length=8, choices=Scope.choices, default=Scope.READ)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        # The table of the dashboards app, where API tokens lived before the API had its own package (api/0001).
        db_table = "dashboards_apitoken"

    def __str__(self) -> str:
        return f"{self.user} {self.name}".strip()

    @property
    def read_only(self) -> bool:
        """A read-only token acts as a viewer whatever its user's role (accounts/policy.py)."""
        return self.scope != Scope.WRITE
