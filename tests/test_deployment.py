"""docker-compose.yml is valid and matches the documented commands (no Docker engine is needed)."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_every_service_has_an_image_or_build_and_the_stateful_ones_a_healthcheck():
    services = COMPOSE["services"]
    assert set(services) >= {"postgres", "redis", "mosquitto", "mqtt-auth", "hub", "bridge"}
    for name, service in services.items():
        assert "image" in service or "build" in service, name
    for name in ("postgres", "redis", "mosquitto", "hub"):
        assert services[name]["healthcheck"]["test"], name
    assert services["postgres"]["image"].startswith("timescale/timescaledb")


def test_service_commands_are_the_documented_ones():
    """The hub runs `manage.py serve` after `migrate`, the bridge `manage.py mqtt_bridge`, as docs say."""
    services = COMPOSE["services"]
    hub = " ".join(services["hub"]["command"])
    assert "manage.py migrate --noinput" in hub and "manage.py serve --host 0.0.0.0 --port 8000" in hub
    assert services["bridge"]["command"] == ["python", "manage.py", "mqtt_bridge"]
    assert services["mqtt-auth"]["command"][:3] == ["python", "manage.py", "mqtt_auth_files"]
    docs = (ROOT / "docs" / "deployment.md").read_text()
    assert "manage.py serve" in docs and "manage.py mqtt_bridge" in docs


def test_mounted_files_exist_and_the_image_copies_every_app():
    for service in COMPOSE["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), source
    dockerfile = (ROOT / "Dockerfile").read_text()
    for package in ("hub", "devices", "ingest", "dashboards", "bridge"):
        assert re.search(rf"^COPY {package} {package}$", dockerfile, re.MULTILINE), package


def test_environment_names_are_settings_the_hub_reads():
    settings_source = (ROOT / "hub" / "settings.py").read_text()
    env = COMPOSE["x-hub-env"]
    for name in [n for n in env if n != "HUB_MQTT_BRIDGE_PASSWORD"]:
        assert f'"{name}"' in settings_source, f"{name} is not read by hub/settings.py"


@pytest.mark.skipif(not shutil.which("docker"), reason="no docker client")
def test_docker_compose_config_accepts_the_file_where_the_plugin_exists():
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip("docker client without the compose plugin")
    done = subprocess.run(
        ["docker", "compose", "config", "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"HUB_SECRET_KEY": "x", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
