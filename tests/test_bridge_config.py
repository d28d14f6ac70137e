"""The bridge reads HUB_MQTT_* through the hub's env helpers: same booleans, errors that name the variable."""

import os

import pytest
from django.core.exceptions import ImproperlyConfigured

from bridge.config import bridge_config


@pytest.fixture(autouse=True)
def _no_mqtt_environment(monkeypatch):
    """Each test sets only the variables it is about."""
    for name in [n for n in os.environ if n.startswith("HUB_MQTT_")]:
        monkeypatch.delenv(name)


def test_defaults():
    config = bridge_config(url="mqtt://127.0.0.1:1883")
    assert (config.protocol, config.shared, config.share_group, config.error_topic) == (5, True, "hub", True)
    assert (config.session_expiry, config.receive_maximum, config.stats_seconds) == (604800, 1000, 10.0)
    assert (config.metrics_port, config.metrics_host, config.device_cache_seconds) == (0, "127.0.0.1", 10.0)
    assert config.client_id.startswith("hub-bridge-")


@pytest.mark.parametrize(("raw", "shared"), [("off", False), ("on", True), ("0", False), ("YES", True)])
def test_booleans_read_as_everywhere_else(monkeypatch, raw, shared):
    """HUB_MQTT_SHARED=off means a plain subscription, as `off` means false for every HUB_* boolean."""
    monkeypatch.setenv("HUB_MQTT_SHARED", raw)
    config = bridge_config(url="mqtt://127.0.0.1:1883")
    assert config.shared is shared
    assert config.subscription == ("$share/hub/devices/+/telemetry" if shared else "devices/+/telemetry")


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("HUB_MQTT_RECEIVE_MAXIMUM", "abc"),
        ("HUB_MQTT_RECEIVE_MAXIMUM", "0"),
        ("HUB_MQTT_SESSION_EXPIRY", "1.5"),
        ("HUB_MQTT_STATS_SECONDS", "often"),
        ("HUB_MQTT_DEVICE_CACHE_SECONDS", "-1"),
        ("HUB_MQTT_ERROR_TOPIC", "maybe"),
        ("HUB_MQTT_PROTOCOL", "3"),
        ("HUB_MQTT_PROTOCOL", "mqtt5"),
    ],
)
def test_a_bad_value_is_refused_naming_the_variable_and_the_value(monkeypatch, name, raw):
    monkeypatch.setenv(name, raw)
    with pytest.raises(ImproperlyConfigured) as refused:
        bridge_config(url="mqtt://127.0.0.1:1883")
    assert name in str(refused.value) and repr(raw) in str(refused.value)


def test_protocol_4_and_the_command_line_override(monkeypatch):
    monkeypatch.setenv("HUB_MQTT_PROTOCOL", "4")
    assert bridge_config(url="mqtt://127.0.0.1:1883").protocol == 4
    assert bridge_config(url="mqtt://127.0.0.1:1883", protocol=5).protocol == 5
