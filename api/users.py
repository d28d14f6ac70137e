"""People of the hub, for admins only: list, create, get, change (role, scope, active, password, e-mail), delete.
A hub never loses its last active admin (409), and an admin never demotes, deactivates or deletes themselves
(400); every change is audited, never with a password."""

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, User
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.audit import audit_record
from accounts.policy import PERMISSIONS, ROLE_GROUPS, Action, Actor, Role, role_of
from accounts.requests import actor_in
from accounts.scopes import selector_parse
from accounts.users import role_named, user_create, user_role_set, user_scope_set, user_summary
from api import shapes
from api.errors import ApiError, invalid
from api.rest import Pages, body_fields

# Every method, HEAD and OPTIONS too: api.access.Allowed reads this (reads would default to VIEW).
ADMIN_ONLY = dict.fromkeys(("GET", "HEAD", "OPTIONS", "POST", "PATCH", "DELETE"), Action.ADMINISTER)
Body = dict[str, type | tuple[type, ...]]
OPTIONAL_TEXT = (str, type(None))
CREATE_BODY: Body = {"username": str, "password": OPTIONAL_TEXT, "role": str, "scope": list, "email": str}
UPDATE_BODY: Body = {"role": str, "scope": list, "active": bool, "password": OPTIONAL_TEXT, "email": str}
ADMIN_PERMISSION = PERMISSIONS[Role.ADMIN][-1]


def admin_asking(request: Request) -> Actor:
    """The admin asking: a second guard behind the permission class (which reads `policy`)."""
    actor = actor_in(request)
    if not actor.may(Action.ADMINISTER):
        raise ApiError(403, "forbidden", f"your role ({actor.role.label}) may not manage people: only an admin may")
    return actor


def user_or_404(user_id: int) -> User:
    user = get_user_model().objects.filter(pk=user_id).first()
    if user is None:
        raise ApiError(404, "unknown_user", f"no user {user_id}")
    return user


def role_valid(name: str) -> Role:
    try:
        return role_named(name)
    except ValueError as exc:
        raise invalid({"role": str(exc).removeprefix("role: ")}) from None


def scope_valid(selectors: list, role: Role) -> list[str]:
    """The selectors, each parsed (400 naming `scope` and the bad one); none for an admin, who is never scoped."""
    for text in selectors:
        if not isinstance(text, str):
            raise invalid({"scope": 'a list of label selectors, e.g. ["site=north"]'})
        try:
            selector_parse(text)
        except ValidationError as exc:
            raise invalid({"scope": f"{text!r}: {' '.join(exc.messages)}"}) from None
    if selectors and role == Role.ADMIN:
        raise invalid({"scope": "an admin is never scoped (they manage everyone's scopes)"})
    return selectors


def fields_checked(user: User, password: str | None) -> None:
    """The username's and e-mail's own checks (the admin's), then the password rules: 400 naming the field."""
    problems: dict[str, list[str]] = {}
    try:
        user.full_clean(exclude=["password"], validate_unique=False)
    except ValidationError as exc:
        problems |= exc.message_dict
    if password is not None:
        try:
            validate_password(password, user)
        except ValidationError as exc:
            problems["password"] = exc.messages
    if problems:
        raise invalid(problems)


def admins_locked() -> None:
    """Serialise every change that could take away an admin (the admin group's row, FOR UPDATE): two admins
    demoting each other at once must not leave none."""
    list(Group.objects.select_for_update().filter(name=ROLE_GROUPS[Role.ADMIN]))


def other_admins(user: User) -> bool:
    """Whether an active admin other than `user` remains (a superuser, or holding the permission by a group or
    directly: whatever makes role_of say admin)."""
    holds = Q(is_superuser=True)
    for via in ("groups__permissions", "user_permissions"):
        holds |= Q(**{f"{via}__codename": ADMIN_PERMISSION, f"{via}__content_type__app_label": "accounts"})
    return get_user_model().objects.filter(holds, is_active=True).exclude(pk=user.pk).exists()


def admin_kept(actor: Actor, user: User, doing: str, *, field: str | None = None) -> None:
    """Refuse to `doing` (demote, deactivate, delete) an active admin who is the last one (409) or the asker (400)."""
    if not user.is_active or role_of(user) < Role.ADMIN:
        return
    if not other_admins(user):
        message = f"cannot {doing} {user.get_username()}: the hub's last active admin; make another admin first"
        raise ApiError(409, "last_admin", message, field=field)
    if user.pk == actor.user_id:
        raise ApiError(400, "own_account", f"you cannot {doing} yourself: ask another admin", field=field)


def audited(actor: Actor, action: str, user: User, **detail: object) -> dict[str, Any]:
    """Record `action` on `user` with their role, own scope and state (never a password); their summary."""
    summary = user_summary(user)
    audit_record(
        actor,
        action,
        user,
        username=summary["username"],
        role=summary["role"],
        scope=summary["own_scope"],
        active=summary["active"],
        **detail,
    )
    return summary


def user_change(actor: Actor, user: User, fields: dict[str, Any]) -> None:
    """Apply a PATCH body to `user` (under admins_locked), each part checked first."""
    role = role_valid(fields["role"]) if "role" in fields else None
    scope = scope_valid(fields["scope"], role or role_of(user)) if "scope" in fields else None
    user.email = fields.get("email", user.email)
    fields_checked(user, fields.get("password"))
    if role is not None and role < Role.ADMIN:
        admin_kept(actor, user, "demote", field="role")
    if fields.get("active") is False:
        admin_kept(actor, user, "deactivate", field="active")
    if role is not None:
        user_role_set(user, role)
        user.is_superuser = user.is_superuser and role == Role.ADMIN  # a superuser is admin whatever their groups
    if scope is not None:
        user_scope_set(user, scope)
    user.is_active = fields.get("active", user.is_active)
    if "password" in fields:
        user.set_password(fields["password"])  # None: unusable, API tokens only
    user.save()


class UserList(APIView):
    policy = ADMIN_ONLY
    pagination_class = Pages

    @extend_schema(
        operation_id="users_list",
        summary="People of the hub, by username, a page at a time (admins only)",
        responses={200: shapes.User(many=True), **shapes.ERRORS},
    )
    def get(self, request: Request) -> Response:
        admin_asking(request)
        paginator = Pages()
        page = paginator.paginate_queryset(get_user_model().objects.order_by("username"), request, view=self)
        return paginator.get_paginated_response([user_summary(user) for user in page])

    @extend_schema(
        operation_id="users_create",
        summary="Add a person with a role and a label scope (admins only)",
        request=shapes.UserCreate,
        responses={201: shapes.User, 409: shapes.Error, **shapes.ERRORS},
    )
    def post(self, request: Request) -> Response:
        actor = admin_asking(request)
        fields = body_fields(request, types=CREATE_BODY, required=["username", "role"])
        role = role_valid(fields["role"])
        scope = scope_valid(fields.get("scope", []), role)
        username, email, password = fields["username"], fields.get("email", ""), fields.get("password")
        taken = ApiError(409, "conflict", f"username: {username!r} is taken", field="username")
        if get_user_model().objects.filter(username=username).exists():
            raise taken
        fields_checked(get_user_model()(username=username, email=email), password)
        try:
            with transaction.atomic():
                user = user_create(username, password=password, role=role, scope=scope, email=email)
                summary = audited(actor, "user.create", user)
        except IntegrityError:  # a concurrent create took the name since the check
            raise taken from None
        return Response(summary, status=201)


class UserDetail(APIView):
    policy = ADMIN_ONLY

    @extend_schema(
        operation_id="users_get",
        summary="One person (admins only)",
        responses={200: shapes.User, 404: shapes.Error, **shapes.ERRORS},
    )
    def get(self, request: Request, user_id: int) -> Response:
        admin_asking(request)
        return Response(user_summary(user_or_404(user_id)))

    @extend_schema(
        operation_id="users_update",
        summary="Change a person's role, scope (replaced as a whole), active, password or e-mail (admins only)",
        request=shapes.UserUpdate,
        responses={200: shapes.User, 404: shapes.Error, 409: shapes.Error, **shapes.ERRORS},
    )
    def patch(self, request: Request, user_id: int) -> Response:
        actor = admin_asking(request)
        fields = body_fields(request, types=UPDATE_BODY)
        with transaction.atomic():
            admins_locked()
            user = user_or_404(user_id)
            user_change(actor, user, fields)
            summary = audited(actor, "user.change", user, changed=sorted(fields))  # names only, never values
        return Response(summary)

    @extend_schema(
        operation_id="users_delete",
        summary="Remove a person and their API tokens (admins only; to keep their trail, PATCH active=false)",
        responses={204: None, 404: shapes.Error, 409: shapes.Error, **shapes.ERRORS},
    )
    def delete(self, request: Request, user_id: int) -> Response:
        actor = admin_asking(request)
        with transaction.atomic():
            admins_locked()
            user = user_or_404(user_id)
            admin_kept(actor, user, "delete")
            audited(actor, "user.delete", user)
            user.delete()
        return Response(status=204)
