from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from devices.labels import labels_parse
from devices.services import DevicesRefused, device_create


class Command(BaseCommand):
    help = "Register a device and print its access token (last line; shown only once)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("key", help="stable device key (letters, digits, - and _)")
        parser.add_argument("--name", default="", help="display name")
        parser.add_argument("--labels", default="", help="name=value pairs, comma-separated: site=north, model=tx")

    def handle(self, *args, key: str, name: str, labels: str, **options) -> None:
        try:
            _device, token = device_create(key=key, name=name, labels=labels_parse(labels))
        except ValidationError as exc:
            raise CommandError(f"labels: {'; '.join(exc.messages)}") from None
        except DevicesRefused as exc:
            raise CommandError("; ".join(f"{p.field}: {p.message}" for p in exc.problems)) from None
        self.stderr.write(f"Created device {key!r}. Its token is shown once; store it now.")
        self.stdout.write(token)
