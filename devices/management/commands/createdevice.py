from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from devices.services import device_create


class Command(BaseCommand):
    help = "Register a device and print its access token (last line; shown only once)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("key", help="stable device key (letters, digits, - and _)")
        parser.add_argument("--name", default="", help="display name")

    def handle(self, *args, key: str, name: str, **options) -> None:
        try:
            _device, token = device_create(key=key, name=name)
        except ValidationError as exc:
            raise CommandError("; ".join(f"{f}: {' '.join(m)}" for f, m in exc.message_dict.items())) from None
        self.stderr.write(f"Created device {key!r}. Its token is shown once; store it now.")
        self.stdout.write(token)
