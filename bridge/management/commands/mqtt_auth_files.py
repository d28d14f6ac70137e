import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from bridge.auth_files import auth_files_write


class Command(BaseCommand):
    help = (
        "Write Mosquitto's password and ACL files from the device registry (devices log in as their key with "
        "their token; the bridge as its own user). Reload the broker afterwards: kill -HUP <mosquitto>."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--out", required=True, type=Path, help="directory for `passwd` and `acl`")
        parser.add_argument("--bridge-user", help="the bridge's username (default: the user in HUB_MQTT_URL)")
        parser.add_argument(
            "--bridge-password-env",
            metavar="VAR",
            help="environment variable holding the bridge's password (default: the password in HUB_MQTT_URL)",
        )

    def handle(self, *args, out: Path, bridge_user: str | None, bridge_password_env: str | None, **options) -> None:
        url = urlsplit(settings.HUB_MQTT_URL or "")
        user = bridge_user or (unquote(url.username) if url.username else None)
        if bridge_password_env:
            password = os.environ.get(bridge_password_env)
            source = bridge_password_env
        else:
            password = unquote(url.password) if url.password else None
            source = "HUB_MQTT_URL"
        if not user:
            raise CommandError("no bridge user: pass --bridge-user or put it in HUB_MQTT_URL (mqtt://user:pass@…)")
        if not password:
            raise CommandError(f"no bridge password in {source}")
        try:
            written = auth_files_write(out=out, bridge_user=user, bridge_password=password)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if written.without_hash:
            self.stderr.write(
                f"{len(written.without_hash)} devices have no broker hash yet (created before MQTT auth; "
                f"rotate their tokens): {', '.join(written.without_hash[:10])}"
            )
        self.stdout.write(
            f"Wrote {written.passwd} ({written.devices} devices + bridge user {user!r}) and {written.acl}. "
            "Reload Mosquitto to apply: kill -HUP <pid> (docker compose kill -s HUP mosquitto)."
        )
