"""API tokens of people, for scripts: issued (the plaintext shown once), found by their plaintext, revoked."""

from django.contrib.auth.models import User
from django.utils import timezone

from api.models import ApiToken, Scope
from devices.tokens import token_hash, token_new


def api_token_issue(*, user: User, name: str = "", scope: str = Scope.READ) -> tuple[ApiToken, str]:
    """Issue an API token for `user`; returns it with the plaintext (the only time it is visible)."""
    if scope not in Scope.values:
        raise ValueError(f"scope {scope!r}: one of {', '.join(Scope.values)}")
    token = token_new()
    return ApiToken.objects.create(user=user, name=name, scope=scope, token_hash=token_hash(token)), token


def api_token_create(*, user: User, name: str = "", scope: str = Scope.READ) -> str:
    """`api_token_issue`, the plaintext only (scripts and tests that need nothing else)."""
    return api_token_issue(user=user, name=name, scope=scope)[1]


def api_token_find(credential: str) -> ApiToken | None:
    """The live token (not revoked, its operator active) whose plaintext is `credential`, with its user."""
    if not credential or len(credential) > 256:
        return None
    token = ApiToken.objects.select_related("user").filter(token_hash=token_hash(credential), revoked_at=None).first()
    return token if token is not None and token.user.is_active else None


def api_token_revoke(*, token_id: int, user: User | None = None) -> bool:
    """Revoke a token (of `user`, if given) at once; False if there is no such live token."""
    tokens = ApiToken.objects.filter(id=token_id, revoked_at=None)
    if user is not None:
        tokens = tokens.filter(user=user)
    return tokens.update(revoked_at=timezone.now()) == 1
