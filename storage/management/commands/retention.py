from typing import Any

from django.core.management.base import BaseCommand

from hub.config import HubConfig
from storage.retention import retention_apply_once_across_processes


class Command(BaseCommand):
    help = "Apply data retention now (HUB_RAW_RETENTION_DAYS, HUB_ROLLUP_1M/1H_RETENTION_DAYS)."

    def handle(self, *args: Any, **options: Any) -> None:
        deleted = retention_apply_once_across_processes(HubConfig.from_settings().retention)
        if deleted is None:
            self.stdout.write("another process is applying retention; nothing done")
        else:
            self.stdout.write(f"deleted: {deleted or 'nothing'}")
