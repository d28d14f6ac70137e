from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from dashboards.auth import api_token_create


class Command(BaseCommand):
    help = "Issue an API token for an operator (printed once, as the last line)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="what the token is for")

    def handle(self, *args, username: str, name: str, **options) -> None:
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user {username!r}")
        token = api_token_create(user=user, name=name)
        self.stderr.write(f"API token for {username}; shown once, store it now.")
        self.stdout.write(token)
