"""What every bench repeats: a scratch database with bench devices, hub subprocesses, figures, output.

Loopback only: every address here is 127.0.0.1. Benches import it as `from harness import ...` (they run
as scripts, `bench/` is on sys.path); importing it puts the project root on sys.path, so the hub's own
modules (`testkit.process`, `clients.device`, `core.epoch`) import after it.
"""

import getpass
import hashlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from storage.timescale import preloads_timescaledb  # noqa: E402
from testkit.process import HubExited, HubProcess, free_port  # noqa: E402 - needs the root on sys.path


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


# `timeout 600 bench/…` ends a bench with SIGTERM, which by default kills it before any `finally`: the hubs it
# started (one traced by tracemalloc spun at a full core for 20 minutes) outlived it and loaded every later run.
# As SystemExit, the benches' `finally` blocks stop their hubs and drop their scratch databases.
signal.signal(signal.SIGTERM, _exit_on_sigterm)

ADMIN_URL = os.environ.get("HUB_BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
# Wide when piped (to a file, `make bench | tee`): tables stay one line per row.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `condition` until it holds; exit the bench naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


# The scratch database -----------------------------------------------------------------------------------


def database_url(name: str, admin_url: str = ADMIN_URL) -> str:
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def database_create(name: str, admin_url: str = ADMIN_URL) -> str:
    """(Re)create an empty database and return its URL."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return database_url(name, admin_url)


def database_drop(name: str, admin_url: str = ADMIN_URL) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def hub_env(database: str, *, redis_url: str, prefix: str, **extra: str) -> dict[str, str]:
    """A clean environment for hub processes: no HUB_*/DJANGO_* leaking in from the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HUB_", "DJANGO_"))}
    env.update(
        HUB_DATABASE_URL=database,
        HUB_REDIS_URL=redis_url,
        HUB_CHANNEL_PREFIX=prefix,  # pub/sub channels ignore Redis db numbers: the prefix separates runs
        HUB_SECRET_KEY="bench-" * 10,
        HUB_LOG_LEVEL="WARNING",
    )
    env.update(extra)
    env.setdefault("HUB_VAR_DIR", tempfile.mkdtemp(prefix=f"hub-{prefix}-"))
    return env


def migrate(env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)


@contextmanager
def bench_database(name: str, *, redis_url: str, admin_url: str = ADMIN_URL, **extra: str) -> Iterator[dict[str, str]]:
    """A migrated scratch database `hub_bench_<name>_<pid>` and the hub environment for it; dropped after."""
    db = f"hub_bench_{name}_{os.getpid()}"
    env = hub_env(database_create(db, admin_url), redis_url=redis_url, prefix=f"bench{name}{os.getpid()}", **extra)
    try:
        migrate(env)
        yield env
    finally:
        database_drop(db, admin_url)
        shutil.rmtree(env["HUB_VAR_DIR"], ignore_errors=True)


@dataclass(frozen=True, slots=True)
class BenchDevice:
    key: str
    token: str


def devices_copy(url: str, count: int, *, prefix: str) -> list[BenchDevice]:
    """Register `count` devices `<prefix>0…` in one COPY into devices_device; their tokens, in order."""
    devices = [BenchDevice(f"{prefix}{i}", secrets.token_urlsafe(24)) for i in range(count)]
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        # Other NOT NULL text columns of the registry (broker_hash today) get '': survives new fields.
        cur.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'devices_device'"
            " AND is_nullable = 'NO' AND column_default IS NULL AND data_type LIKE 'char%%'"
            " AND column_name NOT IN ('key', 'name', 'token_hash')"
        )
        extra = [row[0] for row in cur.fetchall()]
        columns = ", ".join(["key", "name", "created_at", "token_hash", *extra])
        with cur.copy(f"COPY devices_device ({columns}) FROM STDIN") as copy:
            for d in devices:
                copy.write_row((d.key, "", "now", hashlib.sha256(d.token.encode()).hexdigest(), *[""] * len(extra)))
    return devices


def operator_token(url: str, username: str = "bench-operator") -> str:
    """A superuser and a read-write API token of theirs (`Authorization: Bearer <it>`): one who may send commands."""
    token = secrets.token_urlsafe(24)
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        user_id = cur.execute(
            "INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email, is_staff,"
            " is_active, date_joined) VALUES ('!', true, %s, '', '', '', true, true, now()) RETURNING id",
            [username],
        ).fetchone()[0]
        cur.execute(
            "INSERT INTO dashboards_apitoken (user_id, name, token_hash, scope, created_at)"
            " VALUES (%s, 'bench', %s, 'write', now())",
            [user_id, hashlib.sha256(token.encode()).hexdigest()],
        )
    return token


# Hub processes ------------------------------------------------------------------------------------------


def hub_start(hub: HubProcess, timeout: float = 60.0) -> HubProcess:
    """Start `hub` and wait until it serves; exit the bench with the reason (and the log's tail) if not."""
    try:
        return hub.start().wait_ready(timeout)
    except (HubExited, TimeoutError) as failed:
        raise SystemExit(str(failed)) from failed


@contextmanager
def hubs_running(
    env: dict[str, str], count: int = 1, *, root: Path = ROOT, workers: int = 1, **extra: str
) -> Iterator[list[HubProcess]]:
    """`count` hubs (the code under `root`; each `serve --workers`) sharing the database and Redis of `env`."""
    hubs = [HubProcess({**env, **extra}, root=root, workers=workers) for _ in range(count)]
    try:
        for hub in hubs:
            hub_start(hub)
        yield hubs
    finally:
        for hub in hubs:
            hub.stop()
        for hub in hubs:
            for line in hub.complaints()[-5:]:
                console.print(f"hub :{hub.port} {line}", style="yellow", markup=False)


# A private Mosquitto on a free loopback port (anonymous, as tests/mqtt_broker.py's), and bridge workers on it.
MOSQUITTO_CONFIG = """
user {user}
listener {port} 127.0.0.1
allow_anonymous true
set_tcp_nodelay true
persistence false
max_queued_messages 100000
max_inflight_messages 1000
"""


class StackCeiling(HubProcess):
    """bench/stack_ceiling.py, started, probed and stopped as a hub is, with the hubs' environment (the same limits)."""

    def command(self) -> list[str]:
        return [sys.executable, str(ROOT / "bench" / "stack_ceiling.py"), "--port", str(self.port)]


@contextmanager
def stack_running(env: dict[str, str]) -> Iterator[HubProcess]:
    stack = hub_start(StackCeiling(env))
    try:
        yield stack
    finally:
        stack.stop()


def listening(port: int) -> bool:
    """Something accepts connections on the loopback port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@contextmanager
def mosquitto_running(workdir: Path) -> Iterator[tuple[subprocess.Popen, int]]:
    """Mosquitto on a free loopback port (its log in `workdir`); yields (process, port)."""
    port = free_port()
    config = workdir / f"mosquitto-{port}.conf"
    config.write_text(MOSQUITTO_CONFIG.format(port=port, user=getpass.getuser()))
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    with (workdir / f"mosquitto-{port}.log").open("w") as log:
        process = subprocess.Popen([binary, "-c", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: listening(port), 10, "mosquitto")
        yield process, port
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextmanager
def bridge_running(env: dict[str, str], port: int, *, name: str = "bench") -> Iterator[subprocess.Popen]:
    """One `manage.py mqtt_bridge` worker on the broker at `port`, sharing the database and Redis of `env`; yields
    once it has subscribed (its log: `bridge-<name>.log` in HUB_VAR_DIR)."""
    log_path = Path(env["HUB_VAR_DIR"]) / f"bridge-{name}.log"
    worker_env = {
        **env,
        "HUB_MQTT_URL": f"mqtt://127.0.0.1:{port}",
        "HUB_MQTT_CLIENT_ID": f"bench-bridge-{name}-{os.getpid()}",
        "HUB_MQTT_SHARE_GROUP": f"bench{os.getpid()}",
        "HUB_LOG_LEVEL": "INFO",  # "subscribed to" is how it says it is ready
    }
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "mqtt_bridge"], cwd=ROOT, env=worker_env, stdout=log, stderr=log
        )
    try:
        wait_for(lambda: process.poll() is not None or "subscribed to" in log_path.read_text(), 60, "the bridge")
        if process.poll() is not None:
            raise SystemExit(f"the bridge exited ({process.returncode}):\n{log_path.read_text()[-3000:]}")
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
        complaints = [line for line in log_path.read_text().splitlines() if " WARNING " in line or " ERROR " in line]
        for line in complaints[-5:]:
            console.print(f"bridge {line}", style="yellow", markup=False)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# Figures and output -------------------------------------------------------------------------------------


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an already sorted sequence; NaN when empty."""
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))]


def p50_p99(values: Sequence[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return percentile(ordered, 50), percentile(ordered, 99)


def progress() -> Progress:
    """A progress bar for phases of a bench (`transient`: the final table stays the only output)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        transient=True,
    )


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """The final figures as a Markdown table (rich's MARKDOWN box), ready to paste into docs/benchmarks.md."""
    result = Table(*columns, title=title, box=box.MARKDOWN, title_justify="left")
    for row in rows:
        result.add_row(*(str(cell) for cell in row))
    console.print()
    console.print(result)


def with_children(pid: int) -> list[int]:
    """`pid` and its child processes (a `serve --workers N` supervisor's workers)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:
        return [pid]
    return [pid, *map(int, children)]


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time of processes so far (from /proc/<pid>/stat); a process gone counts 0."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all cores, from /proc/stat): ours and everyone else's."""
    user, nice, system, idle, iowait, irq, softirq, steal = map(int, Path("/proc/stat").read_text().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def database_backend_pids(url: str) -> list[int]:
    """Server processes of the other sessions on this database (the hubs' pools): their CPU is the DB's."""
    with psycopg.connect(url) as conn:
        query = "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        return [row[0] for row in conn.execute(query)]


def timescale_preloaded(admin_url: str = ADMIN_URL) -> bool:
    with psycopg.connect(admin_url) as conn:
        return preloads_timescaledb(str(conn.execute("SHOW shared_preload_libraries").fetchone()[0]))


@contextmanager
def baseline_tree(revision: str, env: dict[str, str], redis_url: str) -> Iterator[tuple[Path, dict[str, str]]]:
    """REV's files in a temporary directory (`git archive`) and a scratch database for it.

    The database is migrated by this tree with HUB_TIMESCALE=off: code from before the TimescaleDB mode
    fails to migrate on a PostgreSQL server that lists timescaledb without preloading it (as this machine's
    does once `make timescaledb` ran). The schema of plain PostgreSQL is the same; a revision whose
    migrations differ from this tree's would need its own. On a server that preloads TimescaleDB (`make
    timescaledb`'s, through HUB_BENCH_ADMIN_URL) both trees get hypertables, so the two compare on one engine."""
    root = Path(tempfile.mkdtemp(prefix="hub-baseline-"))
    name = f"hub_bench_base_{os.getpid()}"
    try:
        archive = subprocess.run(["git", "archive", revision], cwd=ROOT, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(root)], input=archive, check=True)  # noqa: S607
        base_env = hub_env(database_create(name), redis_url=redis_url, prefix=f"{env['HUB_CHANNEL_PREFIX']}base")
        migrate({**base_env, "HUB_TIMESCALE": "auto" if timescale_preloaded() else "off"})
        yield root, base_env
    finally:
        database_drop(name)
        shutil.rmtree(root, ignore_errors=True)
