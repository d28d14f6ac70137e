"""A private Mosquitto on a free loopback port with the hub's broker settings, for tests that restart it,
inspect its sessions, or must not share the machine's broker."""

import getpass
import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.conftest import free_port

CONFIG = """
# Run as the current user: as root Mosquitto would switch to `mosquitto`, who cannot use pytest's tmp dir.
user {user}
listener {port} 127.0.0.1
allow_anonymous true
set_tcp_nodelay true
persistence true
persistence_location {dir}/
max_queued_messages 100000
max_inflight_messages 1000
"""


class MosquittoBroker:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.config = workdir / f"mosquitto-{self.port}.conf"
        self.config.write_text(CONFIG.format(port=self.port, dir=workdir, user=getpass.getuser()))
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> "MosquittoBroker":
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        log = (self.workdir / f"mosquitto-{self.port}.log").open("a")
        self.process = subprocess.Popen([binary, "-c", str(self.config)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)  # bounded polling: Mosquitto gives no other sign that it listens

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()  # SIGTERM: Mosquitto writes its persistence file
            self.process.wait(timeout=10)
            self.process = None
