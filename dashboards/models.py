"""Operator API tokens for the history API (sessions cover the browser)."""

from django.conf import settings
from django.db import models


class ApiToken(models.Model):
    """A bearer token for scripts reading the history API; stored as a SHA-256 hash, shown once."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.user} {self.name}".strip()
