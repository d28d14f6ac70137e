from django.apps import AppConfig
from django.db import connections
from django.db.models.signals import post_migrate


class IngestConfig(AppConfig):
    name = "ingest"

    def ready(self) -> None:
        post_migrate.connect(storage_configure, sender=self)


def storage_configure(sender: AppConfig, using: str, **kwargs) -> None:
    """After every `migrate`: TimescaleDB's compression and its policy follow the settings (HUB_COMPRESS_AFTER
    takes effect at the next migrate, which deployments run at every start)."""
    from core.timescale import reading_is_hypertable, timescale_configure

    connection = connections[using]
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        if reading_is_hypertable(cursor):
            timescale_configure(cursor)
