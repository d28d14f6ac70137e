"""Settings come from HUB_* variables; bad values and dangerous combinations are refused with their name."""

import logging
import re
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from core.env import env_bool, env_int, env_list
from core.logs import redact
from hub import checks


def test_bad_values_name_the_variable(monkeypatch):
    monkeypatch.setenv("HUB_X_BOOL", "maybe")
    monkeypatch.setenv("HUB_X_INT", "12abc")
    with pytest.raises(ImproperlyConfigured, match="HUB_X_BOOL='maybe'"):
        env_bool("HUB_X_BOOL", False)
    with pytest.raises(ImproperlyConfigured, match="HUB_X_INT='12abc'"):
        env_int("HUB_X_INT", 1)
    monkeypatch.setenv("HUB_X_INT", "-5")
    with pytest.raises(ImproperlyConfigured, match="at least 0"):
        env_int("HUB_X_INT", 1)


def test_values_parse(monkeypatch):
    monkeypatch.setenv("HUB_X_BOOL", "yes")
    monkeypatch.setenv("HUB_X_LIST", " a.example , b.example,")
    assert env_bool("HUB_X_BOOL", False) is True
    assert env_list("HUB_X_LIST", []) == ["a.example", "b.example"]
    assert env_int("HUB_X_UNSET", 7) == 7


@pytest.mark.django_db
def test_wildcard_allowed_hosts_is_refused_outside_the_embedded_default(settings, postgres):
    """ALLOWED_HOSTS=['*'] is an error on PostgreSQL (production), allowed only for the SQLite default."""
    settings.ALLOWED_HOSTS = ["*"]
    assert [e.id for e in checks.check_allowed_hosts(None)] == ["hub.E001"]
    settings.ALLOWED_HOSTS = ["hub.example.com"]
    assert checks.check_allowed_hosts(None) == []


def test_tokens_are_redacted_from_paths():
    line = '127.0.0.1:5 - "POST /api/v1/s3cr3t-T0k_en/telemetry HTTP/1.1" 200 and "WebSocket /ws/v1/abc/telemetry"'
    assert (
        redact(line) == '127.0.0.1:5 - "POST /api/v1/***/telemetry HTTP/1.1" 200 and "WebSocket /ws/v1/***/telemetry"'
    )
    assert redact("/ws/v1/devices/kitchen/stream") == "/ws/v1/devices/kitchen/stream"
    assert (
        redact("/ws/v1/fleet/stream /api/v1/devices/k/telemetry") == "/ws/v1/fleet/stream /api/v1/devices/k/telemetry"
    )
    assert redact("Not Found: /API/v2/s3cr3t/rpc?x=1") == "Not Found: /API/v2/***/rpc?x=1"


TOKEN = "Zq3-vT9_kLm2Xw8aBc4dEf5GhJ6kP7rS"  # the shape of every hub token: 32 URL-safe characters


@pytest.mark.parametrize(
    "spelling",
    [
        "POST /api/v1/{t}/telemetry",
        "POST /api/v1//{t}/telemetry",
        "POST /api/v1/./{t}/telemetry",
        "POST /api/v1/.//{t}/telemetry",
        "GET /API/V1/{t}/attributes?clientKeys=a",
        "POST /api/v2/{t}/rpc",
        "GET /ws/v1//{t}/telemetry",
        "GET /ws/v1/./{t}/telemetry",
        "POST /api/v1/devices/{t}/telemetry",
        "GET /devices/{t}/history/",
        "POST /telemetry?token={t}",
        "POST /api/v1/telemetry?access_token={t}&x=1",
        "mqtt CONNECT username=dev password={t}",
        "Not Found: /api/v1/{t}",
        "'{t}'",
        'body {{"token": "{t}"}}',
        "/api/v1/{t}%2Ftelemetry",
    ],
)
def test_no_spelling_of_a_token_survives_redaction(spelling):
    """However a client spells the path (extra slashes, dot segments, case, versions), or wherever else the token
    lands (a device key's place, a query string, a password, a body), the logged line holds no token."""
    line = spelling.format(t=TOKEN)
    assert TOKEN not in redact(line), redact(line)
    assert "***" in redact(line)


def test_what_is_not_a_token_is_left_alone():
    for line in ("/ws/v1/devices/kitchen/stream", "/api/v1/devices/boiler-2/telemetry?keys=temperature,humidity",
                 "GET /api/v1/schema", "writer: batch of 20000 readings"):  # fmt: skip
        assert redact(line) == line


def test_records_are_scrubbed_as_they_are_made_for_every_handler(caplog):
    """Any handler (pytest's here, which has no filter) gets the record already scrubbed, arguments included."""
    caplog.set_level(logging.INFO)
    logging.getLogger("hub.tests").info('"%s %s"', "POST", "/api/v1/s3cr3t/attributes")
    assert caplog.records[-1].getMessage() == '"POST /api/v1/***/attributes"'
    assert caplog.records[-1].args == ("POST", "/api/v1/***/attributes")


def test_every_setting_is_listed_in_env_example_and_documented():
    """A HUB_* variable the code reads is in .env.example and explained somewhere under docs/."""
    root = Path(__file__).resolve().parent.parent
    code = (root / "hub" / "settings.py").read_text() + (root / "bridge" / "config.py").read_text()
    names = set(re.findall(r'env\w*\(\s*"(HUB_[A-Z0-9_]+)"', code))
    assert len(names) > 40, names
    example = (root / ".env.example").read_text()
    docs = "".join(p.read_text() for p in (root / "docs").glob("*.md"))
    assert sorted(n for n in names if n not in example) == [], ".env.example"
    assert sorted(n for n in names if n not in docs) == [], "docs/"
