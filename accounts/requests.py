"""The policy's actor of a request (a page's session, or the API's session or token), found once per request,
and the pages' guard."""

import functools
from collections.abc import Callable
from typing import Protocol

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse

from accounts.policy import Action, Actor, actor_of


class Credential(Protocol):
    """What the policy needs of an API token (api.models.ApiToken)."""

    id: int

    @property
    def read_only(self) -> bool: ...


def client_address(request: HttpRequest) -> str:
    # REMOTE_ADDR only: uvicorn puts a forwarded address there when, and only when, the proxy is trusted
    # (HUB_TRUSTED_PROXIES); a client's own X-Forwarded-For is never read.
    return request.META.get("REMOTE_ADDR", "")[:45]


def actor_in(request) -> Actor:
    """The actor of a Django or REST framework request (for the latter: once its authentication ran)."""
    http = getattr(request, "_request", request)  # REST framework's Request wraps Django's
    actor = getattr(http, "hub_actor", None)
    if actor is None:
        credential: Credential | None = getattr(request, "auth", None)
        actor = actor_of(
            request.user,
            read_only=credential is not None and credential.read_only,
            token_id=credential.id if credential is not None else None,
            address=client_address(http),
        )
        http.hub_actor = actor
    return actor


def allowed(action: Action) -> Callable:
    """A page for people whose role may `action`: the login page for a stranger, 403 for a role below it."""

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @functools.wraps(view)
        def guarded(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not actor_in(request).may(action):
                raise PermissionDenied(f"your role may not {action.name.lower()} here")
            return view(request, *args, **kwargs)

        return guarded

    return decorate
