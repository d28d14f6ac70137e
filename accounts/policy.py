"""Who may do what, on which devices: the one place that decides, asked by pages, the API, live streams and the
admin (docs/security.md).

A person has a role (viewer < operator < admin: Django groups holding accounts.Access's permissions, so the
admin and the API agree) and may be limited to a label scope. An API token acts as its user, capped at viewer
when read-only; both are read again on every request, so demoting a user demotes their tokens at once. Admins
are never scoped: they manage the people and their scopes."""

import enum
from collections.abc import Collection
from dataclasses import dataclass
from typing import TypeVar

from django.contrib.auth.models import AnonymousUser, User
from django.db.models import Model, Q, QuerySet

from accounts.models import LabelScope
from accounts.scopes import Scope, scope_covers, scope_of, scope_within, scoped
from devices.models import Device

M = TypeVar("M", bound=Model)


class Role(enum.IntEnum):
    """Ordered: each role may do what the ones below it may."""

    NONE = 0  # logged in, but given no role: sees nothing
    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        return self.name.lower()


class Action(enum.Enum):
    """What is asked, each with the least role that may do it."""

    VIEW = Role.VIEWER  # pages, history, CSV, live streams, the read API, one's own API tokens
    OPERATE = Role.OPERATOR  # devices, labels, device tokens, alert rules, acknowledge, provisioning, bulk import
    ADMINISTER = Role.ADMIN  # users, roles, scopes, webhook destinations, others' API tokens, the audit log


# The group of each role and the permissions it holds (accounts/migrations/0002 creates them).
ROLE_GROUPS = {Role.VIEWER: "viewer", Role.OPERATOR: "operator", Role.ADMIN: "admin"}
PERMISSIONS = {
    Role.VIEWER: ("view_fleet",),
    Role.OPERATOR: ("view_fleet", "operate_fleet"),
    Role.ADMIN: ("view_fleet", "operate_fleet", "administer_hub"),
}


@dataclass(frozen=True)
class Actor:
    """Who asks: their role (already capped by a read-only token), their scope, and for the audit trail who and
    from where."""

    role: Role
    scope: Scope = ()
    user_id: int | None = None
    name: str = ""
    token_id: int | None = None
    address: str = ""

    def may(self, action: Action) -> bool:
        return self.role >= action.value

    def sees(self, labels: dict[str, str]) -> bool:
        """Whether a device with these labels is this actor's to see (and, by role, to change)."""
        return self.role > Role.NONE and scope_covers(self.scope, labels)

    def devices(self) -> QuerySet[Device]:
        """Every device this actor sees."""
        return self.scoped(Device.objects.all())

    def scoped(self, objects: QuerySet[M], labels: str = "labels") -> QuerySet[M]:
        """`objects` limited to the devices this actor sees (`labels`: the path to their device's labels)."""
        if self.role == Role.NONE:
            return objects.none()
        return scoped(objects, self.scope, labels)

    def covers(self, scope: Scope) -> bool:
        """Whether everything `scope` matches is this actor's (a rule's or a profile's scope)."""
        return scope_within(scope, self.scope)


NOBODY = Actor(role=Role.NONE)


def role_of(user: User | AnonymousUser) -> Role:
    """The highest role the user's permissions give (a superuser's: admin; an inactive user's: none)."""
    if not user.is_authenticated:
        return Role.NONE
    for role in (Role.ADMIN, Role.OPERATOR, Role.VIEWER):
        if user.has_perm(f"accounts.{PERMISSIONS[role][-1]}"):
            return role
    return Role.NONE


def _role_given(codenames: set[str]) -> Role:
    return next((r for r in (Role.ADMIN, Role.OPERATOR, Role.VIEWER) if PERMISSIONS[r][-1] in codenames), Role.NONE)


def people_now(user_ids: Collection[int]) -> dict[int, tuple[Role, Scope]]:
    """The role and scope of each of these users as stored now (as role_of and actor_of read them), in five
    queries however many there are: a process's open streams ask every refresh. A user deleted or inactive: none."""
    ids = list(user_ids)
    active = dict(User.objects.filter(id__in=ids, is_active=True).values_list("id", "is_superuser"))
    codenames: dict[int, set[str]] = {user_id: set() for user_id in active}
    ours = "accounts"  # the app of accounts.Access, whose permissions make the roles
    own = User.user_permissions.through.objects.filter(user_id__in=active, permission__content_type__app_label=ours)
    grouped = User.groups.through.objects.filter(user_id__in=active, group__permissions__content_type__app_label=ours)
    for user_id, codename in [*own.values_list("user_id", "permission__codename"),
                              *grouped.values_list("user_id", "group__permissions__codename")]:  # fmt: skip
        codenames[user_id].add(codename)
    selectors: dict[int, list[str]] = {user_id: [] for user_id in active}
    theirs = LabelScope.objects.filter(user_id__in=active).values_list("user_id", "selector")
    groups = LabelScope.objects.filter(group__user__in=active).values_list("group__user", "selector")
    for user_id, selector in [*theirs, *groups]:
        selectors[user_id].append(selector)
    people: dict[int, tuple[Role, Scope]] = {}
    for user_id, superuser in active.items():
        role = Role.ADMIN if superuser else _role_given(codenames[user_id])
        people[user_id] = (role, () if role == Role.ADMIN else scope_of(selectors[user_id]))
    return people


def scope_of_user(user: User) -> Scope:
    """The selectors given to the user and to any of their groups."""
    selectors = LabelScope.objects.filter(Q(user_id=user.pk) | Q(group__user=user.pk))
    return scope_of(list(selectors.values_list("selector", flat=True)))


def actor_of(
    user: User | AnonymousUser, *, read_only: bool = False, token_id: int | None = None, address: str = ""
) -> Actor:
    """The actor of a request: a session's user, or an API token's (`read_only`: capped at viewer)."""
    full = role_of(user)
    if full == Role.NONE or not isinstance(user, User):
        return Actor(role=Role.NONE, name=user.get_username(), address=address)
    role = min(full, Role.VIEWER) if read_only else full
    scope = () if full == Role.ADMIN else scope_of_user(user)
    return Actor(role=role, scope=scope, user_id=user.pk, name=user.get_username(), token_id=token_id, address=address)
