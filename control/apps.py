from django.apps import AppConfig


class ControlConfig(AppConfig):
    name = "control"
    verbose_name = "attributes and commands"
    default_auto_field = "django.db.models.BigAutoField"
