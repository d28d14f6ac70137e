from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from api.credentials import api_token_issue
from api.models import Scope


class Command(BaseCommand):
    help = "Issue an API token for an operator (printed once, as the last line); read-only unless --scope write."

    def add_arguments(self, parser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="what the token is for")
        parser.add_argument("--scope", choices=Scope.values, default=Scope.READ, help="read (default) or write")

    def handle(self, *args, username: str, name: str, scope: str, **options) -> None:
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user {username!r}")
        token, plaintext = api_token_issue(user=user, name=name, scope=scope)
        self.stderr.write(f"API token {token.id} ({scope}) for {username}; shown once, store it now.")
        self.stdout.write(plaintext)
