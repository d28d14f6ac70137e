"""Who is asking: a logged-in operator (session) or a script with `Authorization: Bearer <api token>`."""

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.http import HttpRequest

from dashboards.models import ApiToken
from devices.tokens import token_hash, token_new


def api_token_create(*, user: AbstractBaseUser, name: str = "") -> str:
    """Issue an API token for `user`; returns the plaintext (the only time it is visible)."""
    token = token_new()
    ApiToken.objects.create(user=user, name=name, token_hash=token_hash(token))
    return token


def operator_of(request: HttpRequest) -> AbstractBaseUser | AnonymousUser:
    """The session user, else the owner of a valid bearer token, else anonymous."""
    if request.user.is_authenticated:
        return request.user
    scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credential:
        token = ApiToken.objects.select_related("user").filter(token_hash=token_hash(credential.strip())).first()
        if token is not None and token.user.is_active:
            return token.user
    return AnonymousUser()
