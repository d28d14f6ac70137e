from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class AccountsConfig(AppConfig):
    """Who may do what, on which devices (accounts/policy.py), and the audit trail (accounts/audit.py)."""

    name = "accounts"
    default = True
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from accounts import signals  # noqa: F401 - logins into the audit trail
        from accounts.users import roles_ensure

        post_migrate.connect(roles_ensure, sender=self)


class HubAdminConfig(admin_apps.AdminConfig):
    """Django's admin with the hub's site: entry by role (accounts/adminsite.py)."""

    default = False  # named in INSTALLED_APPS in place of django.contrib.admin
    default_site = "accounts.adminsite.HubAdminSite"
