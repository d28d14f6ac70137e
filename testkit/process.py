"""HubProcess: a `manage.py serve` subprocess on a loopback port, for the tests and the benches.

Started, probed on /healthz, stopped with a signal, restarted on the same port; its output goes to
`hub-<port>.log` in its HUB_VAR_DIR. No part of the hub imports this module.
"""

import asyncio
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# `pip install -e .` puts a finder on sys.meta_path that maps this tree's packages: a module another revision lacks
# (a package moved since) would be taken from this tree. Without it, another tree's manage.py imports its own only.
_ONLY_ITS_OWN_TREE = (
    "import runpy, sys; "
    "sys.meta_path[:] = [f for f in sys.meta_path if not f.__module__.startswith('__editable__')]; "
    "sys.argv[0] = 'manage.py'; runpy.run_path('manage.py', run_name='__main__')"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HubExited(RuntimeError):
    """The hub process ended while it was expected to serve."""


@dataclass
class HubProcess:
    """One `manage.py serve` subprocess with environment `env` (HUB_VAR_DIR set), restartable on its port."""

    env: dict[str, str]
    port: int = field(default_factory=free_port)
    root: Path = ROOT  # the code it runs: this tree, or another revision's (bench/ingest.py --baseline)
    workers: int = 1
    process: subprocess.Popen | None = None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return Path(self.env["HUB_VAR_DIR"]) / f"hub-{self.port}.log"

    def command(self) -> list[str]:
        """What the process runs, from `root`: `manage.py serve` on its port (a bench may serve something else)."""
        arguments = ["serve", "--port", str(self.port), "--workers", str(self.workers)]
        if self.root != ROOT:  # another revision's tree: none of this tree's modules may fill its gaps
            return [sys.executable, "-c", _ONLY_ITS_OWN_TREE, *arguments]
        return [sys.executable, "manage.py", *arguments]

    def start(self) -> "HubProcess":
        """Launch the process (appending to the log: a restart keeps the earlier run's lines)."""
        with self.log.open("a") as out:
            self.process = subprocess.Popen(  # noqa: S603 - this interpreter and a script of a tree of the hub
                self.command(), cwd=self.root, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        return self

    def healthy(self) -> bool:
        """/healthz answers 200; raises HubExited (with the log's tail) once the process has ended."""
        if self.process is None or self.process.poll() is not None:
            code = None if self.process is None else self.process.returncode
            tail = self.log.read_text()[-3000:] if self.log.exists() else ""
            raise HubExited(f"the hub on port {self.port} is not running (exit code {code}):\n{tail}")
        try:
            with urllib.request.urlopen(f"{self.http}/healthz", timeout=1) as answer:  # noqa: S310 - loopback
                return answer.status == 200
        except OSError:
            return False

    def wait_ready(self, timeout: float = 60.0) -> "HubProcess":
        """Block until /healthz answers; TimeoutError naming the log after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the hub on port {self.port} did not answer /healthz in {timeout}s ({self.log})")
            time.sleep(0.05)  # bounded polling: the process gives no other sign that it listens
        return self

    async def ready(self, timeout: float = 60.0) -> "HubProcess":
        """`wait_ready` for a running event loop (in a thread: the loop keeps serving meanwhile)."""
        return await asyncio.to_thread(self.wait_ready, timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=timeout)
        self.process = None

    def metrics(self) -> dict[str, float]:
        """The hub's /metrics samples, `name{labels}` → value (Prometheus text format, comments skipped)."""
        with urllib.request.urlopen(f"{self.http}/metrics", timeout=10) as answer:  # noqa: S310 - loopback
            lines = answer.read().decode().splitlines()
        samples = (line.rsplit(" ", 1) for line in lines if line and not line.startswith("#"))
        return {name: float(value) for name, value in samples}

    def complaints(self) -> list[str]:
        """WARNING and worse lines of the hub's log (fan-out failures, retries): printed, not hidden."""
        if not self.log.exists():
            return []
        return [line for line in self.log.read_text().splitlines() if " WARNING " in line or " ERROR " in line]
