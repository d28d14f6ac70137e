import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from bridge.config import admin_login
from bridge.dynsec import DynsecError, FileReport, SyncReport, dynsec_file_write, registry_sync

SHOWN = 20  # keys named per line; the count says the rest


def _named(keys: list[str]) -> str:
    more = f", … ({len(keys) - SHOWN} more)" if len(keys) > SHOWN else ""
    return ", ".join(keys[:SHOWN]) + more


class Command(BaseCommand):
    help = (
        "Bring Mosquitto's dynamic-security plugin in line with the device registry over its control topic "
        "(HUB_MQTT_ADMIN_URL). With --init FILE, write the plugin's file instead, every device with its stored "
        "hash, for a broker that is stopped (docs/mqtt.md, 'Credentials that follow the registry')."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--init", type=Path, metavar="FILE", help="write the plugin's JSON file (broker stopped)")
        parser.add_argument("--bridge-user", help="the bridge's username (default: the user in HUB_MQTT_URL)")
        parser.add_argument(
            "--bridge-password-env",
            metavar="VAR",
            help="environment variable holding the bridge's password (default: the password in HUB_MQTT_URL)",
        )

    def handle(self, *args, init: Path | None, bridge_user: str | None, bridge_password_env: str | None, **_) -> None:
        admin = admin_login()
        if admin is None:
            raise CommandError("HUB_MQTT_ADMIN_URL is not set: mqtt://admin:password@host:1883")
        url = urlsplit(settings.HUB_MQTT_URL or "")
        user = bridge_user or (unquote(url.username) if url.username else None)
        if bridge_password_env:
            password = os.environ.get(bridge_password_env)
        else:
            password = unquote(url.password) if url.password else None
        if not user:
            self.stderr.write("No bridge user (HUB_MQTT_URL, --bridge-user): the bridge's client is left alone.")
        try:
            if init is not None:
                self._written(dynsec_file_write(init, admin=admin, bridge_user=user, bridge_password=password))
            else:
                self._report(registry_sync(admin, bridge_user=user, bridge_password=password))
        except (DynsecError, ValueError, OSError) as exc:
            raise CommandError(str(exc)) from None

    def _written(self, written: FileReport) -> None:
        if written.without_hash:
            self.stderr.write(
                f"{len(written.without_hash)} device(s) have no broker hash (registered before MQTT auth; rotate "
                f"their tokens): {_named(written.without_hash)}"
            )
        kept = f"; kept {len(written.kept)} other client(s): {_named(written.kept)}" if written.kept else ""
        self.stdout.write(f"Wrote {written.path}: {written.devices} device(s), the admin and the bridge{kept}.")
        self.stdout.write("The broker reads it when it starts: (re)start it now.")

    def _report(self, report: SyncReport) -> None:
        lines = [
            ("created role(s)", report.roles_created),
            ("fixed the ACLs of role(s)", report.roles_fixed),
            ("deleted role(s) of devices gone", report.roles_deleted),
            ("created client(s)", report.clients_created),
            ("gave their role to client(s)", report.clients_fixed),
            ("deleted client(s) of devices gone from the registry", report.clients_deleted),
            ("deleted client(s) whose password is not the device's current token", report.clients_stale),
        ]
        for what, names in lines:
            if names:
                self.stdout.write(f"{what[0].upper()}{what[1:]}: {len(names)}: {_named(names)}")
        if report.bridge_password_set:
            self.stdout.write("Set the bridge's password (the broker refused the one in HUB_MQTT_URL).")
        if report.missing:
            self.stderr.write(
                f"{len(report.missing)} client(s) missing at the broker, which the hub cannot create without their "
                f"plaintext tokens: {_named(report.missing)}. Rotate those tokens, or stop the broker, run "
                "`mqtt_dynsec_sync --init FILE` and start it again."
            )
        if not any(names for _, names in lines) and not report.bridge_password_set:
            self.stdout.write("The broker is in line with the registry.")
