"""What a user installs is what is tested: the wheel, in a fresh virtual environment without dev extras, runs
every part of the hub from a directory that is not the checkout; every runtime import is a dependency."""

import asyncio
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import httpx
import pytest
import websockets
from django.conf import settings
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import ROOT, database_url_for_tests, free_port
from tests.imports import imported_packages
from tests.waiting import eventually

pytestmark = pytest.mark.timeout(600)

LOCAL_APPS = [app for app in settings.INSTALLED_APPS if (ROOT / app).is_dir()]
# Every package of the tree but the tests', the benches' and their harnesses' (testkit/) is the product.
SOURCE_PACKAGES = sorted(
    p.parent.name for p in ROOT.glob("*/__init__.py") if p.parent.name not in ("tests", "bench", "testkit")
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    command = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)]
    built = subprocess.run(command, check=True, capture_output=True, text=True, timeout=300)
    assert "would be ignored" not in built.stderr, "the package configuration names every folder it ships"
    shutil.rmtree(ROOT / "build", ignore_errors=True)  # setuptools builds in the tree
    return next(out.glob("telemetry_hub-*.whl"))


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh virtual environment with the wheel and its runtime dependencies only; its bin directory."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    done = subprocess.run([*pip, str(wheel)], capture_output=True, text=True, timeout=500)
    assert done.returncode == 0, done.stderr[-3000:]
    return venv / "bin"


def test_the_wheel_holds_every_app_with_its_templates_and_static_files(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    packages = {name.split("/")[0] for name in names if name.endswith(".py")}
    assert packages == set(SOURCE_PACKAGES) >= set(LOCAL_APPS), packages
    assert not any(name.startswith(("tests/", "bench/", "testkit/")) for name in names)
    for required in (
        "dashboards/templates/dashboards/device.html",
        "dashboards/static/dashboards/device.js",
        "alerts/templates/alerts/rules.html",
        "hub/cli.py",
    ):
        assert required in names, required


def test_every_third_party_module_the_hub_imports_comes_from_a_declared_dependency():
    """Imports of the installed packages (not tests, not benches) map to distributions named in
    [project].dependencies, directly: a module that only a dev extra or another package's dependency brings
    would break the day that changes."""
    declared: set[str] = set()
    for line in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        requirement = Requirement(line)
        declared.add(canonicalize_name(requirement.name))
        for extra in requirement.extras:  # psycopg[pool] declares psycopg-pool
            for sub in map(Requirement, importlib.metadata.requires(requirement.name) or []):
                if sub.marker is not None and sub.marker.evaluate({"extra": extra}):
                    declared.add(canonicalize_name(sub.name))
    providers = importlib.metadata.packages_distributions()
    paths = [path for package in SOURCE_PACKAGES for path in (ROOT / package).rglob("*.py")]
    imported = {module for path in paths for module in imported_packages(path)[0]}
    third_party = imported - set(sys.stdlib_module_names) - set(SOURCE_PACKAGES)
    missing = {
        module: providers.get(module)
        for module in third_party
        if not {canonicalize_name(d) for d in providers.get(module, [])} & declared
    }
    assert not missing, f"imported but not a declared dependency: {missing}"


def cli(bin_dir: Path, *args: str, env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run(
        [str(bin_dir / "telemetry-hub"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"{args}: {done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.mark.serial
@pytest.mark.usefixtures("postgres", "redis")
async def test_the_installed_hub_serves_ingest_and_pages_from_outside_the_checkout(installed, tmp_path):
    """`check`, `migrate`, `createdevice`, `serve`, `simulate` and `mqtt_bridge --help` of the installed
    package, from a directory that is not the checkout, against a scratch PostgreSQL database and Redis."""
    import psycopg

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    admin = database_url_for_tests().rsplit("/", 1)[0] + "/postgres"
    name = f"hub_pkg_{os.getpid()}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    env = {
        "PATH": f"{installed}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "HUB_DATABASE_URL": admin.rsplit("/", 1)[0] + f"/{name}",
        "HUB_REDIS_URL": os.environ["HUB_REDIS_URL"],
        "HUB_CHANNEL_PREFIX": f"pkg{os.getpid()}",
        "HUB_SECRET_KEY": "p" * 50,
        "HUB_VAR_DIR": str(tmp_path / "var"),
    }
    port = free_port()
    server = None
    try:
        cli(installed, "check", "--fail-level", "ERROR", env=env, cwd=outside)
        cli(installed, "migrate", "-v0", env=env, cwd=outside)
        token = cli(installed, "createdevice", "pkg-1", env=env, cwd=outside).strip().splitlines()[-1]
        assert "--url" in cli(installed, "mqtt_bridge", "--help", env=env, cwd=outside)
        server = subprocess.Popen(
            [str(installed / "telemetry-hub"), "serve", "--port", str(port)],
            cwd=outside,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:

            async def up() -> bool:
                try:
                    return (await client.get("/healthz")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(up, timeout=60, what="the installed hub")
            posted = await client.post(f"/api/v1/{token}/telemetry", content=b'{"temperature": 21.5}')
            assert posted.status_code == 200, posted.text
            async with websockets.connect(f"ws://127.0.0.1:{port}/ws/v1/{token}/telemetry") as ws:
                await ws.send('{"temperature": 22.5}')
                assert await asyncio.wait_for(ws.recv(), 10) == '{"ack":1}'
            login = await client.get("/login/")
            assert login.status_code == 200 and "csrfmiddlewaretoken" in login.text, "templates are installed"
            for static in ("/static/dashboards/device.js", "/static/plotly/plotly.min.js"):
                assert (await client.get(static)).status_code == 200, static
        output = await asyncio.to_thread(
            cli, installed, "simulate", "--devices", "1", "--rate", "10", "--seconds", "2",
            "--url", f"ws://127.0.0.1:{port}", env=env, cwd=outside,
        )  # fmt: skip
        acked = int(re.search(r"acked (\d+)", output)[1])
        assert acked > 0, output
        with psycopg.connect(env["HUB_DATABASE_URL"]) as conn:
            stored = conn.execute("SELECT count(*) FROM ingest_reading").fetchone()[0]
        assert stored >= 2 + 3 * acked, (stored, acked)  # 2 posted, 3 numeric keys per simulated message
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
