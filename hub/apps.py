from django.apps import AppConfig


class HubConfig(AppConfig):
    name = "hub"

    def ready(self) -> None:
        from core.logs import install_token_redaction
        from hub import checks  # noqa: F401 - registers system checks

        install_token_redaction()
