from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class StorageConfig(AppConfig):
    """The readings, latest values and rollups. The app label stays `ingest`, the package's name before it
    was storage/, so existing databases keep their tables (ingest_reading, ...) and migration history."""

    name = "storage"
    label = "ingest"

    def ready(self) -> None:
        post_migrate.connect(storage_configure, sender=self)


def storage_configure(sender: AppConfig, using: str, **kwargs: Any) -> None:
    """After every `migrate`: what the settings configure follows them (TimescaleDB's compression and its policy:
    HUB_COMPRESS_AFTER takes effect at the next migrate, which deployments run at every start)."""
    from storage.engines import engine

    engine(using).migrated(using)
