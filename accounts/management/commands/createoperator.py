"""`manage.py createoperator NAME --role viewer|operator|admin [--scope site=north ...]`: a person of the hub from
the shell (the first admin, or a wallboard's token-only viewer); `--update` changes an existing one."""

import getpass
import os
import sys

from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from accounts.policy import Role, role_of
from accounts.scopes import selector_parse
from accounts.users import role_named, user_create, user_role_set, user_scope_set, user_summary


class Command(BaseCommand):
    help = (
        "Create a person with a role (viewer, operator or admin) and a label scope, or change one with --update. "
        "The password comes from --password-env VAR, else a prompt; --no-password: API tokens only."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--role", help="viewer, operator or admin (required unless --update)")
        parser.add_argument(
            "--scope",
            action="append",
            metavar="SELECTOR",
            help="only devices matching this label selector, e.g. site=north (repeat: any matches); not for admins",
        )
        parser.add_argument("--unscoped", action="store_true", help="with --update: drop the scope (every device)")
        parser.add_argument("--email", help="the person's e-mail address")
        password = parser.add_mutually_exclusive_group()
        password.add_argument("--password-env", metavar="VAR", help="read the password from this variable")
        password.add_argument("--no-password", action="store_true", help="no password: the person uses API tokens")
        parser.add_argument("--update", action="store_true", help="change an existing person instead")

    def handle(self, *args, username: str, update: bool, role: str | None, scope: list[str] | None, **options) -> None:
        wanted = _role(role) if role else None
        selectors = [] if options["unscoped"] else scope
        _check_selectors(selectors or [])
        user: User
        if update:
            user = self._update(username, wanted, selectors, **options)
        else:
            user = self._create(username, wanted, selectors or [], **options)
        summary = user_summary(user)
        where = ", ".join(summary["scope"]) or "every device"
        self.stdout.write(f"{'changed' if update else 'created'} {username}: role {summary['role']}, scope {where}")
        if not user.has_usable_password():
            self.stdout.write(f"no password: issue an API token with `manage.py createapitoken {username}`")

    def _create(self, username: str, role: Role | None, scope: list[str], **options) -> User:
        if role is None:
            raise CommandError("--role: one of viewer, operator, admin")
        users = get_user_model()
        if users.objects.filter(username=username).exists():
            raise CommandError(f"a user {username!r} exists (change them with --update)")
        try:  # the username's and the e-mail's own checks (the admin's), before any password is asked
            users(username=username, email=options["email"] or "").full_clean(exclude=["password"])
        except ValidationError as exc:
            raise CommandError("; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())) from None
        _check_unscoped_admin(scope, role)
        password = None if options["no_password"] else _password(options["password_env"])
        try:
            return user_create(username, password=password, role=role, scope=scope, email=options["email"] or "")
        except ValidationError as exc:  # Django's password validators, with their messages
            raise CommandError(f"password: {' '.join(exc.messages)}") from None

    def _update(self, username: str, role: Role | None, scope: list[str] | None, **options) -> User:
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user {username!r}")
        _check_unscoped_admin(scope or [], role or role_of(user))
        with transaction.atomic():
            if role is not None:
                user_role_set(user, role)
                if role < Role.ADMIN:
                    user.is_superuser = False  # else a superuser stays admin whatever their groups
            if scope is not None:
                user_scope_set(user, scope)
            if options["email"] is not None:
                user.email = options["email"]
            if options["no_password"]:
                user.set_unusable_password()
            elif options["password_env"]:
                password = _env_password(options["password_env"])
                _validated(password, user)
                user.set_password(password)
            user.save()
        return user


def _role(name: str) -> Role:
    try:
        return role_named(name)
    except ValueError as exc:
        raise CommandError(f"--{exc}") from None


def _check_selectors(selectors: list[str]) -> None:
    for text in selectors:
        try:
            selector_parse(text)
        except ValidationError as exc:
            raise CommandError(f"--scope {text!r}: {' '.join(exc.messages)}") from None


def _check_unscoped_admin(selectors: list[str], role: Role) -> None:
    if selectors and role == Role.ADMIN:
        raise CommandError("--scope: an admin is never scoped (they manage everyone's scopes)")


def _password(variable: str | None) -> str:
    """From the environment variable, else asked twice at the terminal."""
    if variable:
        return _env_password(variable)
    if not sys.stdin.isatty():
        raise CommandError("no terminal to ask for a password: use --password-env VAR or --no-password")
    password = getpass.getpass("Password: ")
    if not password:
        raise CommandError("an empty password: use --no-password for a person without one")
    if getpass.getpass("Password (again): ") != password:
        raise CommandError("the passwords differ")
    return password


def _env_password(variable: str) -> str:
    password = os.environ.get(variable)
    if not password:
        raise CommandError(f"--password-env: the environment variable {variable} is not set")
    return password


def _validated(password: str, user: User) -> None:
    try:
        validate_password(password, user)
    except ValidationError as exc:
        raise CommandError(f"password: {' '.join(exc.messages)}") from None
