from django.core.management.base import BaseCommand, CommandError

from api.credentials import api_token_revoke


class Command(BaseCommand):
    help = "Revoke an API token by its id (createapitoken and GET /api/v1/tokens show it); it stops working at once."

    def add_arguments(self, parser) -> None:
        parser.add_argument("token_id", type=int)

    def handle(self, *args, token_id: int, **options) -> None:
        if not api_token_revoke(token_id=token_id):
            raise CommandError(f"no live API token {token_id}")
        self.stderr.write(f"API token {token_id} revoked.")
