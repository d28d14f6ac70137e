from django.apps import AppConfig


class HubConfig(AppConfig):
    name = "hub"

    def ready(self) -> None:
        from hub import checks  # noqa: F401 - registers system checks
