from django.core.management.base import BaseCommand, CommandError

from devices.models import Device
from devices.services import device_token_rotate


class Command(BaseCommand):
    help = "Issue a new access token for a device (the old one stops working) and print it."

    def add_arguments(self, parser) -> None:
        parser.add_argument("key")

    def handle(self, *args, key: str, **options) -> None:
        try:
            token = device_token_rotate(key=key)
        except Device.DoesNotExist:
            raise CommandError(f"no device with key {key!r}") from None
        self.stderr.write(f"New token for {key!r}; the previous one no longer works.")
        self.stdout.write(token)
