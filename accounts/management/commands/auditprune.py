from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from accounts.audit import audit_prune
from hub.config import HubConfig


class Command(BaseCommand):
    help = "Forget audit events past HUB_AUDIT_RETENTION_DAYS (or --days) now; the hub does it every interval."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=int, help="instead of HUB_AUDIT_RETENTION_DAYS (0: keep forever)")

    def handle(self, *args: Any, **options: Any) -> None:
        days = options["days"] if options["days"] is not None else HubConfig.from_settings().audit_retention_days
        if days <= 0:
            self.stdout.write("the audit trail is kept forever (HUB_AUDIT_RETENTION_DAYS=0); nothing done")
            return
        deleted = audit_prune(days=days)
        self.stdout.write(f"deleted {deleted} audit events older than {days} days")
