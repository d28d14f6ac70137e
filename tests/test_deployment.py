"""docker-compose.yml is valid (checked by a real compose implementation) and matches the documented
commands; the image installs the package, as a non-root user with a health check, on the versions CI tests."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from django.db import connection

from tests.services import REQUIRED

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def test_every_service_has_an_image_or_build_and_a_healthcheck():
    services = COMPOSE["services"]
    assert set(services) >= {"postgres", "redis", "mosquitto", "mqtt-auth", "hub", "bridge"}
    for name, service in services.items():
        assert "image" in service or "build" in service, name
    for name in ("postgres", "redis", "mosquitto", "hub", "bridge"):
        assert services[name]["healthcheck"]["test"], name
    assert services["postgres"]["image"].startswith("timescale/timescaledb")


def test_service_commands_are_the_documented_ones():
    """The hub runs `telemetry-hub serve` after `migrate`, the bridge `telemetry-hub mqtt_bridge`, as docs say."""
    services = COMPOSE["services"]
    hub = " ".join(services["hub"]["command"])
    assert "telemetry-hub migrate --noinput" in hub and "telemetry-hub serve --host 0.0.0.0 --port 8000" in hub
    assert services["bridge"]["command"] == ["telemetry-hub", "mqtt_bridge"]
    assert services["mqtt-auth"]["command"][:2] == ["telemetry-hub", "mqtt_auth_files"]
    docs = (ROOT / "docs" / "deployment.md").read_text()
    assert "telemetry-hub serve" in docs and "telemetry-hub mqtt_bridge" in docs


def test_mounted_files_exist():
    for service in COMPOSE["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), source


def test_the_image_installs_the_package_as_a_non_root_user_with_a_health_check():
    """The image holds what `pip install .` installs (tests/test_packaging.py checks that holds every app), so
    no app list is kept here; the build context keeps every package the wheel needs."""
    assert re.search(r"^RUN pip install --no-cache-dir /src", DOCKERFILE, re.MULTILINE)
    assert re.search(r"^USER (?!root\b|0\b)\w+", DOCKERFILE, re.MULTILINE), "the hub runs as a non-root user"
    assert re.search(r"^HEALTHCHECK .*\n?.*healthz", DOCKERFILE, re.MULTILINE)
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip()}
    for package in ("core", "hub", "devices", "ingest", "dashboards", "bridge", "alerts", "pyproject.toml"):
        assert package not in ignored, package


@pytest.mark.django_db
@pytest.mark.usefixtures("postgres")
def test_the_image_and_compose_run_the_python_and_postgresql_majors_ci_tests():
    python = re.search(r"^FROM python:(\d+)\.(\d+)", DOCKERFILE, re.MULTILINE)
    assert python and (int(python[1]), int(python[2])) == sys.version_info[:2]
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version_num")
        server_major = int(cursor.fetchone()[0]) // 10_000
    image = COMPOSE["services"]["postgres"]["image"]
    assert image.split(":")[1].endswith(f"-pg{server_major}"), (image, server_major)


def test_environment_names_are_settings_the_hub_reads():
    settings_source = (ROOT / "hub" / "settings.py").read_text()
    env = COMPOSE["x-hub-env"]
    for name in [n for n in env if n != "HUB_MQTT_BRIDGE_PASSWORD"]:
        assert f'"{name}"' in settings_source, f"{name} is not read by hub/settings.py"


def compose_config(directory: Path) -> subprocess.CompletedProcess:
    """`docker-compose config` (Debian's docker-compose: it validates the file without a Docker engine)."""
    binary = shutil.which("docker-compose")
    if binary is None:
        if REQUIRED:
            pytest.fail("docker-compose is not installed (make system-deps) and HUB_REQUIRE_SERVICES=1")
        pytest.skip("docker-compose is not installed (make system-deps)")
    env = {"HUB_SECRET_KEY": "x", "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [binary, "config", "--quiet"], cwd=directory, capture_output=True, text=True, env=env, timeout=60
    )


def test_a_real_compose_implementation_accepts_the_file():
    done = compose_config(ROOT)
    assert done.returncode == 0, done.stderr


def test_the_compose_check_catches_a_typo(tmp_path):
    """The check above can fail: the same file with one key misspelt is refused."""
    (tmp_path / "docker-compose.yml").write_text(
        (ROOT / "docker-compose.yml").read_text().replace("    command:", "    comand:", 1)
    )
    done = compose_config(tmp_path)
    assert done.returncode != 0 and "comand" in done.stderr, done.stderr
