"""`telemetry-hub`: Django's management commands for an installed hub (what `manage.py` is in a checkout)."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hub.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
