"""System checks that refuse dangerous setting combinations, with a hint."""

from django.conf import settings
from django.core.checks import Error, Warning, register

from storage.engines import engine


def _embedded() -> bool:
    return engine().embedded


@register()
def check_allowed_hosts(app_configs, **kwargs) -> list:
    if "*" in settings.ALLOWED_HOSTS and not _embedded():
        return [
            Error(
                "HUB_ALLOWED_HOSTS contains '*' outside the embedded default.",
                hint="List the host names clients use, e.g. HUB_ALLOWED_HOSTS=hub.example.com",
                id="hub.E001",
            )
        ]
    return []


@register()
def check_secret_key(app_configs, **kwargs) -> list:
    from core.env import env_optional

    if not _embedded() and env_optional("HUB_SECRET_KEY") is None:
        return [
            Warning(
                "HUB_SECRET_KEY is not set; a key generated in HUB_VAR_DIR is used.",
                hint="Set HUB_SECRET_KEY to the same long random value on every hub process.",
                id="hub.W001",
            )
        ]
    return []


@register()
def check_stream_rejoin(app_configs, **kwargs) -> list:
    expiry = settings.CHANNEL_LAYERS["default"].get("CONFIG", {}).get("group_expiry")
    if expiry is not None and expiry <= settings.HUB_STREAM_REJOIN_SECONDS:
        return [
            Error(
                f"HUB_STREAM_REJOIN_SECONDS ({settings.HUB_STREAM_REJOIN_SECONDS:g}) is not below HUB_GROUP_EXPIRY "
                f"({expiry}): open dashboard streams would drop out of their groups and go deaf.",
                hint="Set HUB_STREAM_REJOIN_SECONDS to at most half of HUB_GROUP_EXPIRY.",
                id="hub.E002",
            )
        ]
    return []
