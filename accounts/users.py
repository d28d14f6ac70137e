"""People of the hub: made, given a role and a scope, changed (the createoperator command, /api/v1/users, the
demo). A role is membership of exactly one of the role groups."""

from collections.abc import Iterable

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission, User
from django.contrib.auth.password_validation import validate_password
from django.contrib.contenttypes.models import ContentType
from django.db import transaction

from accounts.models import LabelScope
from accounts.policy import PERMISSIONS, ROLE_GROUPS, Role, role_of, scope_of_user
from accounts.scopes import scope_text, selector_parse
from devices.labels import labels_text


def roles_ensure(**kwargs: object) -> None:
    """The role groups and their permissions, made if missing: after migrations and after a test's flush
    (post_migrate), so a hub never runs without them."""
    access, _ = ContentType.objects.get_or_create(app_label="accounts", model="access")
    for role, group_name in ROLE_GROUPS.items():
        group, _ = Group.objects.get_or_create(name=group_name)
        wanted = {codename for codename in PERMISSIONS[role]}
        permissions = [
            Permission.objects.get_or_create(content_type=access, codename=codename, defaults={"name": codename})[0]
            for codename in sorted(wanted)
        ]
        if set(group.permissions.values_list("codename", flat=True)) != wanted:
            group.permissions.set(permissions)


def role_named(name: str) -> Role:
    """`viewer`, `operator` or `admin`; ValueError naming the choices."""
    for role, group in ROLE_GROUPS.items():
        if group == name:
            return role
    raise ValueError(f"role: one of {', '.join(ROLE_GROUPS.values())}")


def user_role_set(user: User, role: Role) -> None:
    """Make `role` the user's only role group (other groups, e.g. a team's scope, stay). A superuser is an
    admin whatever their groups: given another role, they stop being one."""
    user.groups.remove(*Group.objects.filter(name__in=ROLE_GROUPS.values()))
    if role in ROLE_GROUPS:
        user.groups.add(Group.objects.get(name=ROLE_GROUPS[role]))
    if user.is_superuser and role != Role.ADMIN:
        user.is_superuser = False
        user.save(update_fields=["is_superuser"])


def role_held(user: User) -> Role:
    """The role a user holds, active or not (an inactive user may do nothing, but keeps their role)."""
    if user.is_superuser:
        return Role.ADMIN
    names = set(user.groups.values_list("name", flat=True))
    return max((role for role, group in ROLE_GROUPS.items() if group in names), default=Role.NONE)


def user_scope_set(user: User, selectors: Iterable[str]) -> list[str]:
    """Replace the user's own selectors (validated first; ValidationError names the bad one); their texts."""
    texts = sorted({labels_text(selector_parse(text)) for text in selectors})
    LabelScope.objects.filter(user=user).delete()
    LabelScope.objects.bulk_create(LabelScope(user=user, selector=text) for text in texts)
    return texts


def user_create(username: str, *, password: str | None, role: Role, scope: Iterable[str] = (), email: str = "") -> User:
    """A new person with a role and a scope; the password checked by Django's validators (None: no password,
    e.g. a wallboard that gets an API token only)."""
    users = get_user_model()
    user = users(username=username, email=email)
    if password is not None:
        validate_password(password, user)
    with transaction.atomic():
        if password is None:
            user.set_unusable_password()
        else:
            user.set_password(password)
        user.save()
        user_role_set(user, role)
        user_scope_set(user, scope)
    return user


def user_summary(user: User) -> dict:
    """A person as the API shows them (never the password's hash)."""
    fresh = get_user_model().objects.get(pk=user.pk)  # permissions are cached on the instance
    return {
        "id": user.pk,
        "username": user.get_username(),
        "email": user.email,
        "active": user.is_active,
        "role": (role_of(fresh) if user.is_active else role_held(user)).label,
        "scope": scope_text(scope_of_user(user)),
        "own_scope": sorted(LabelScope.objects.filter(user=user).values_list("selector", flat=True)),
        "last_login": user.last_login.isoformat() if user.last_login else None,
    }
