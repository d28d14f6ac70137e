"""Bridge settings from HUB_MQTT_* variables (docs/mqtt.md), read through core/env.py like the hub's own."""

import socket
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from core.env import env_bool, env_choice, env_float, env_int, env_optional, env_str

TELEMETRY_FILTER = "devices/+/telemetry"


@dataclass(frozen=True, slots=True)
class BridgeConfig:
    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None
    client_id: str
    protocol: int  # 5 or 4 (3.1.1)
    shared: bool
    share_group: str
    session_expiry: int
    receive_maximum: int
    error_topic: bool
    stats_seconds: float
    metrics_port: int = 0  # 0: no /metrics endpoint
    metrics_host: str = "127.0.0.1"
    device_cache_seconds: float = 10.0  # how long a key → device lookup (found or not) is trusted

    @property
    def subscription(self) -> str:
        return self.shared_form(TELEMETRY_FILTER)

    def shared_form(self, topic_filter: str) -> str:
        """The filter as this worker subscribes to it (one of a shared group, or alone)."""
        return f"$share/{self.share_group}/{topic_filter}" if self.shared else topic_filter


def bridge_config(*, url: str | None = None, client_id: str | None = None, protocol: int | None = None) -> BridgeConfig:
    url = url or settings.HUB_MQTT_URL or "mqtt://127.0.0.1:1883"
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ImproperlyConfigured(f"HUB_MQTT_URL={url!r}: the scheme must be mqtt:// or mqtts://")
    return BridgeConfig(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or (8883 if parts.scheme == "mqtts" else 1883),
        tls=parts.scheme == "mqtts",
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        # Stable per worker: the broker keeps this session's queue while the worker is away.
        client_id=client_id or env_optional("HUB_MQTT_CLIENT_ID") or f"hub-bridge-{socket.gethostname()}",
        protocol=protocol or int(env_choice("HUB_MQTT_PROTOCOL", "5", ("4", "5"))),
        shared=env_bool("HUB_MQTT_SHARED", True),
        share_group=env_str("HUB_MQTT_SHARE_GROUP", "hub"),
        session_expiry=env_int("HUB_MQTT_SESSION_EXPIRY", 7 * 24 * 3600),
        receive_maximum=env_int("HUB_MQTT_RECEIVE_MAXIMUM", 1000, minimum=1),  # MQTT 5 forbids 0
        error_topic=env_bool("HUB_MQTT_ERROR_TOPIC", True),
        stats_seconds=env_float("HUB_MQTT_STATS_SECONDS", 10.0, minimum=0.1),  # 0 would log in a busy loop
        metrics_port=env_int("HUB_MQTT_METRICS_PORT", 0),
        metrics_host=env_str("HUB_MQTT_METRICS_HOST", "127.0.0.1"),
        device_cache_seconds=env_float("HUB_MQTT_DEVICE_CACHE_SECONDS", 10.0),
    )


@dataclass(frozen=True, slots=True)
class BrokerLogin:
    """A broker and who logs in to it: the dynamic-security plugin's administrator (bridge/dynsec.py)."""

    host: str
    port: int
    tls: bool
    username: str
    password: str


def admin_login(url: str | None = None) -> BrokerLogin | None:
    """HUB_MQTT_ADMIN_URL, or None when it is empty: device credentials then do not follow the registry live."""
    url = url if url is not None else settings.HUB_MQTT_ADMIN_URL
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.username or not parts.password:
        raise ImproperlyConfigured("HUB_MQTT_ADMIN_URL must be mqtt[s]://user:password@host[:port]")
    return BrokerLogin(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or (8883 if parts.scheme == "mqtts" else 1883),
        tls=parts.scheme == "mqtts",
        username=unquote(parts.username),
        password=unquote(parts.password),
    )
