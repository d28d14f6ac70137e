"""API tokens of the operator asking: list, issue (shown once), revoke."""

from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

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
        "scope": token.scope,
        "created": epoch_ms(token.created_at),
        "revoked": epoch_ms(token.revoked_at) if token.revoked_at else None,
    }


class TokenList(APIView):
    @extend_schema(operation_id="tokens_list", summary="Your API tokens", responses={200: shapes.ApiToken(many=True)})
    def get(self, request: Request) -> Response:
        return Response([token_summary(t) for t in ApiToken.objects.filter(user=request.user).order_by("id")])

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
        return Response({**token_summary(token), "token": plaintext}, status=201)


class TokenRevoke(APIView):
    @extend_schema(
        operation_id="tokens_revoke",
        summary="Revoke one of your API tokens; it stops working at once",
        responses={204: None, 404: shapes.Error, **shapes.ERRORS},
    )
    def delete(self, request: Request, token_id: int) -> Response:
        if not api_token_revoke(token_id=token_id, user=request.user):
            raise ApiError(404, "unknown_token", f"you have no live API token {token_id}")
        return Response(status=204)
