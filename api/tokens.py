"""API tokens of the person asking: list, issue (shown once), revoke; admins list and revoke anyone's. A token
acts with the lesser of its own scope and its user's role (accounts/policy.py)."""

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.audit import audit_record
from accounts.policy import Action
from accounts.requests import actor_in
from api import shapes
from api.credentials import api_token_issue, api_token_revoke
from api.errors import ApiError
from api.models import ApiToken, Scope
from api.rest import body_fields
from core.epoch import epoch_ms


def token_summary(token: ApiToken) -> dict:
    """A token as the API lists it: never its plaintext or hash."""
    return {
        "id": token.id,
        "name": token.name,
        "user": token.user.get_username(),
        "scope": token.scope,
        "created": epoch_ms(token.created_at),
        "revoked": epoch_ms(token.revoked_at) if token.revoked_at else None,
    }


class TokenList(APIView):
    policy = {"POST": Action.VIEW}  # anyone with a role keeps their own tokens (a viewer's act as a viewer)

    @extend_schema(
        operation_id="tokens_list",
        summary="Your API tokens; an admin's `?user=all` or `?user=<username>`: anyone's",
        parameters=[OpenApiParameter("user", str, description="admins: all, or a username")],
        responses={200: shapes.ApiToken(many=True), **shapes.ERRORS},
    )
    def get(self, request: Request) -> Response:
        tokens = ApiToken.objects.select_related("user").order_by("id")
        whose = request.query_params.get("user")
        if whose is None:
            tokens = tokens.filter(user=request.user)
        elif not actor_in(request).may(Action.ADMINISTER):
            raise ApiError(403, "forbidden", "only admins list others' API tokens", parameter="user")
        elif whose != "all":
            tokens = tokens.filter(user__username=whose)
        return Response([token_summary(t) for t in tokens])

    @extend_schema(
        operation_id="tokens_create",
        summary="Issue an API token for yourself (read-only unless scope is write); shown in this answer only",
        request=shapes.ApiToken,
        responses={201: shapes.ApiTokenCreated, **shapes.ERRORS},
    )
    def post(self, request: Request) -> Response:
        fields = body_fields(request, types={"name": str, "scope": str})
        if fields.get("scope", Scope.READ) not in Scope.values:
            raise ApiError(400, "invalid", f"scope: one of {', '.join(Scope.values)}", field="scope")
        longest = ApiToken._meta.get_field("name").max_length
        if longest is not None and len(fields.get("name", "")) > longest:
            raise ApiError(400, "invalid", "name: at most 100 characters", field="name")
        token, plaintext = api_token_issue(user=request.user, **fields)
        audit_record(actor_in(request), "token.issue", token, name=token.name, scope=token.scope)
        return Response({**token_summary(token), "token": plaintext}, status=201)


class TokenRevoke(APIView):
    policy = {"DELETE": Action.VIEW}

    @extend_schema(
        operation_id="tokens_revoke",
        summary="Revoke one of your API tokens (an admin: anyone's); it stops working at once",
        responses={204: None, 404: shapes.Error, **shapes.ERRORS},
    )
    def delete(self, request: Request, token_id: int) -> Response:
        actor = actor_in(request)
        whose = None if actor.may(Action.ADMINISTER) else request.user
        token = ApiToken.objects.filter(id=token_id).first()
        if token is None or not api_token_revoke(token_id=token_id, user=whose):
            raise ApiError(404, "unknown_token", f"you have no live API token {token_id}")
        audit_record(actor, "token.revoke", token, user=token.user.get_username())
        return Response(status=204)
