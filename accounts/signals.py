"""Logins, successful or not, into the audit trail."""

from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.dispatch import receiver

from accounts.audit import audit_record
from accounts.policy import Actor, Role
from accounts.requests import client_address


@receiver(user_logged_in)
def _logged_in(sender, request, user, **kwargs) -> None:
    address = client_address(request) if request is not None else ""
    audit_record(Actor(role=Role.NONE, user_id=user.pk, name=user.get_username(), address=address), "login")


@receiver(user_login_failed)
def _login_failed(sender, credentials, request=None, **kwargs) -> None:
    name = str(credentials.get("username", ""))  # never the password: Django masks it, and it is not read here
    address = client_address(request) if request is not None else ""
    audit_record(Actor(role=Role.NONE, name=name, address=address), "login.failed")
