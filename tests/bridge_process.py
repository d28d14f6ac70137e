"""`manage.py mqtt_bridge` as a subprocess, for tests that start, kill and restart bridge workers."""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, database_url_for_tests
from tests.waiting import eventually

RUN = os.environ["HUB_TEST_RUN_ID"]
STATUS = re.compile(r"bridge: in (\d+), stored (\d+), rejected (\d+).*?acked (\d+)")


class BridgeProcess:
    """`manage.py mqtt_bridge` as a subprocess against the test database and Redis."""

    def __init__(self, tmp_path: Path, url: str, client_id: str, **env: str) -> None:
        self.log = tmp_path / f"bridge-{client_id}.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("HUB_", "DJANGO_"))}
        self.env.update(
            {
                "HUB_DATABASE_URL": database_url_for_tests(),
                "HUB_REDIS_URL": os.environ["HUB_REDIS_URL"],
                "HUB_CHANNEL_PREFIX": os.environ["HUB_CHANNEL_PREFIX"],
                "HUB_SECRET_KEY": "x" * 50,
                "HUB_VAR_DIR": str(tmp_path),
                "HUB_MQTT_URL": url,
                "HUB_MQTT_CLIENT_ID": client_id,
                "HUB_MQTT_SHARE_GROUP": f"hub{RUN}",
                "HUB_MQTT_STATS_SECONDS": "0.5",
                **env,
            }
        )
        self.process: subprocess.Popen | None = None
        self.offset = 0

    def start(self) -> "BridgeProcess":
        self.offset = self.log.stat().st_size if self.log.exists() else 0  # this run's lines start here
        with self.log.open("a") as out:
            self.process = subprocess.Popen(
                [sys.executable, "manage.py", "mqtt_bridge"],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self

    async def subscribed(self) -> "BridgeProcess":
        await eventually(lambda: "subscribed to" in self.run_log(), timeout=20, what="bridge subscribed")
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=30)
        self.process = None

    def run_log(self) -> str:
        """The log of the current (or latest) run only."""
        with self.log.open() as log:
            log.seek(self.offset)
            return log.read()

    def status_lines(self) -> int:
        """How many status lines the current run has logged (one every HUB_MQTT_STATS_SECONDS)."""
        return len(STATUS.findall(self.run_log()))

    def counters(self) -> dict[str, int]:
        """The latest status line of the current run (counters start at zero with each run)."""
        lines = STATUS.findall(self.run_log())
        if not lines:
            return {"in": 0, "stored": 0, "rejected": 0, "acked": 0}
        return dict(zip(("in", "stored", "rejected", "acked"), map(int, lines[-1]), strict=True))
