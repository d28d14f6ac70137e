from django.apps import AppConfig


class ApiConfig(AppConfig):
    """The operator REST API under /api/v1/ (Django REST framework; docs/api.md)."""

    name = "api"
