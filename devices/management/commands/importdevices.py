import os
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from devices.imports import device_specs_from_csv, devices_import, tokens_csv
from devices.services import DevicesRefused


class Command(BaseCommand):
    help = (
        "Create every device of a CSV (key,name,labels) in one transaction, or none; write each one's token once "
        "(key,token) to --tokens-out, or to standard output."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("csv", type=Path, help="a CSV whose header names key (required), name, labels")
        parser.add_argument("--tokens-out", type=Path, help="where to write key,token (created 0600; must not exist)")

    def handle(self, *args, csv: Path, tokens_out: Path | None, **options) -> None:
        specs, problems = device_specs_from_csv(csv.read_text(encoding="utf-8-sig"))
        if len(specs) > settings.HUB_API_BULK_MAX_DEVICES:
            raise CommandError(f"{len(specs)} devices; at most {settings.HUB_API_BULK_MAX_DEVICES} per import")
        if tokens_out is not None and tokens_out.exists():  # it may hold the only copy of earlier tokens
            raise CommandError(f"{tokens_out} exists; name a new file")
        try:
            created = devices_import(specs=specs, problems=problems)
        except DevicesRefused as exc:
            lines = [f"row {p.row} ({p.key!r}): {p.field}: {p.message}" for p in exc.problems]
            raise CommandError(f"nothing created; {len(lines)} refused:\n" + "\n".join(lines)) from None
        if tokens_out is None:
            self.stdout.write(tokens_csv(created), ending="")
        else:
            with os.fdopen(os.open(tokens_out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
                out.write(tokens_csv(created))
        where = tokens_out or "standard output"
        self.stderr.write(f"Created {len(created)} devices; their tokens (shown once) are in {where}.")
