"""Who may call the API: an operator's session (its writes carry the CSRF token: REST framework's
SessionAuthentication checks it) or a script's bearer API token, read-only or read-write. Provisioning devices
are anonymous, rate-limited per client address."""

import math

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from accounts.policy import Action, actor_of
from accounts.requests import actor_in
from api.credentials import api_token_find
from api.errors import ApiError
from api.models import ApiToken
from core.state import runtime_in


class ApiTokenAuthentication(BaseAuthentication):
    """`Authorization: Bearer <api token>`: its operator, with the token as `request.auth`. A token that is
    unknown, revoked or whose operator is inactive is 401; no header at all leaves it to the session."""

    def authenticate(self, request: Request):
        scheme, _, credential = get_authorization_header(request).decode("latin-1").partition(" ")
        if scheme.lower() != "bearer":
            return None
        token = api_token_find(credential.strip())
        if token is None:
            raise AuthenticationFailed("unknown or revoked API token")
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="hub"'


class Allowed(BasePermission):
    """Asks the policy (accounts/policy.py) whether the caller's role may do what the method asks: each view's
    `policy` maps a method to an Action; by default reads are VIEW and writes OPERATE. A session needs a role;
    a read-only token acts as a viewer and never writes, even where a viewer may (its own API tokens): 403
    insufficient_scope when a read-write token would do."""

    def has_permission(self, request: Request, view) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False  # 401: REST framework answers NotAuthenticated when no authenticator succeeded
        method = request.method or "GET"
        action, actor = action_of(view, method), actor_in(request)
        read_only = isinstance(request.auth, ApiToken) and request.auth.read_only
        if read_only and method not in SAFE_METHODS:
            if actor_of(request.user).may(action):
                raise ApiError(403, "insufficient_scope", "this API token is read-only; writes need a read-write token")
        elif actor.may(action):
            return True
        role = actor.role.label
        raise ApiError(403, "forbidden", f"your role ({role}) may not {action.name.lower()}: ask an admin")


def action_of(view, method: str) -> Action:
    """What a view's method asks of the policy."""
    policy: dict[str, Action] = getattr(view, "policy", {})
    return policy.get(method, Action.VIEW if method in SAFE_METHODS else Action.OPERATE)


class ProvisionThrottle(BaseThrottle):
    """Provisioning attempts per client address and hub process (HUB_PROVISION_RATE_LIMIT/_BURST), counted
    before the profile is even looked up: 429 with Retry-After."""

    def allow_request(self, request: Request, view) -> bool:
        # REMOTE_ADDR, never X-Forwarded-For as sent (a client could name itself anew each time): uvicorn puts
        # the forwarded address there when the proxy is trusted (--forwarded-allow-ips).
        limiter = runtime_in(request.scope).provisioning  # the served hub's, from the connection's scope
        self._wait = limiter.delay(request.META.get("REMOTE_ADDR", ""))
        return self._wait == 0

    def wait(self) -> float:
        return math.ceil(self._wait)


class ApiTokenScheme(OpenApiAuthenticationExtension):
    """How the OpenAPI schema (and the docs page's Authorize button) describes the bearer API token."""

    target_class = ApiTokenAuthentication
    name = "apiToken"

    def get_security_definition(self, auto_schema) -> dict:
        return {"type": "http", "scheme": "bearer", "description": "an API token: manage.py createapitoken"}
