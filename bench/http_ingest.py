"""HTTP ingest with a client that is not the hub's own: `wrk` POSTs ThingsBoard-style telemetry for D devices to
`POST /api/v1/<TOKEN>/telemetry` of a hub (`manage.py serve`, PostgreSQL + Redis), each request answered only after
its commit, swept over connections until something breaks, and every acked reading counted in the database.

    .venv/bin/python bench/http_ingest.py                                  # 1 and 100 readings per request, 10 s each
    .venv/bin/python bench/http_ingest.py --connections 16,64,256 --per 1 --seconds 20
    .venv/bin/python bench/http_ingest.py --baseline c65c40e~1         # the same sweep on a commit's hub too
    .venv/bin/python bench/http_ingest.py --peers stack                # no InfluxDB

Every reading has its own ts, so nothing dedupes: stored must equal acked (`lost` 0). Printed beside each row, from
the same run: `÷ COPY`, psycopg COPYing the same number of rows into a scratch table; and, each under the same wrk
load right after the hub's row (`--peers`), `stack`, bench/stack_ceiling.py (the hub's uvicorn settings and parser,
no storage: what the server and the JSON decode alone sustain), and `influxdb`, InfluxDB 1.x (Debian's `influxdb`
package; its default durability: the write-ahead log is fsynced before a write is answered) taking the same
readings as line protocol at `POST /write?db=bench&precision=ms`, counted afterwards with a query. A row breaks
when its p99 passes --p99-goal ms or a request fails; the first such is printed as where the sweep breaks. `wrk`
comes from Debian's package (`apt-get install wrk`). Loopback only; the scratch database and InfluxDB's directory
are removed.
"""

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
from harness import (
    ROOT,
    baseline_tree,
    bench_database,
    console,
    cpu_seconds,
    devices_copy,
    free_port,
    hubs_running,
    listening,
    stack_running,
    table,
    wait_for,
    with_children,
)

from core.epoch import now_ms

LUA = """
local tokens = {TOKENS}
local per, base = {PER}, {BASE}
local counter = 0
local threads = {{}}
function setup(thread) thread:set("tid", #threads) table.insert(threads, thread) end
function request()
  counter = counter + 1
  local n = counter * 64 + (tid or 0)  -- unique across threads: every reading has its own (device, ts)
  local token = tokens[(n % #tokens) + 1]
  local parts = {{}}
  for i = 0, per - 1 do
    parts[#parts + 1] = '{{"ts":' .. (base + n * per + i) .. ',"values":{{"t":' .. ((n + i) % 100) .. '}}}}'
  end
  local body = per == 1 and parts[1] or ("[" .. table.concat(parts, ",") .. "]")
  return wrk.format("POST", "/api/v1/" .. token .. "/telemetry", {{["Content-Type"] = "application/json"}}, body)
end
function done(summary, latency, requests)
  io.write(string.format('WRK {{"requests": %d, "non2xx": %d, "errors": %d, "p50": %d, "p99": %d, "max": %d}}\\n',
    summary.requests, summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout, latency:percentile(50), latency:percentile(99), latency.max))
end
"""


# The same readings as InfluxDB line protocol: one series per device, each reading its own ms timestamp.
INFLUX_LUA = """
local per, base, devices = {PER}, {BASE}, {DEVICES}
local counter = 0
local threads = {{}}
function setup(thread) thread:set("tid", #threads) table.insert(threads, thread) end
function request()
  counter = counter + 1
  local n = counter * 64 + (tid or 0)
  local device = n % devices
  local lines = {{}}
  for i = 0, per - 1 do
    lines[#lines + 1] = "reading,device=d" .. device .. " t=" .. ((n + i) % 100) .. " " .. (base + n * per + i)
  end
  return wrk.format("POST", "/write?db=bench&precision=ms", {{["Content-Type"] = "text/plain"}},
    table.concat(lines, "\\n"))
end
""" + LUA[LUA.index("function done") :]

INFLUX_CONFIG = """
reporting-disabled = true
bind-address = "127.0.0.1:{rpc}"
[meta]
  dir = "{root}/meta"
[data]
  dir = "{root}/data"
  wal-dir = "{root}/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:{port}"
  log-enabled = false
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
"""


@contextlib.contextmanager
def influxdb_running() -> "Iterator[InfluxDB]":
    """A private influxd on free loopback ports, its data in a scratch directory (removed after)."""
    if shutil.which("influxd") is None:
        raise SystemExit("influxd is not installed: apt-get install influxdb (or --peers stack)")
    with tempfile.TemporaryDirectory(prefix="bench-influx-") as root:
        port = free_port()
        config = Path(root) / "influxdb.conf"
        config.write_text(INFLUX_CONFIG.format(root=root, port=port, rpc=free_port()))
        log = open(Path(root) / "influxd.log", "w")  # noqa: SIM115 - closed below
        process = subprocess.Popen(["influxd", "-config", str(config)], stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: listening(port), 30, "influxd to listen")
            influx = InfluxDB(f"http://127.0.0.1:{port}", process.pid)
            influx.query("CREATE DATABASE bench")
            yield influx
        finally:
            process.terminate()
            process.wait(30)
            log.close()


@dataclass
class InfluxDB:
    http: str
    pid: int

    def query(self, q: str) -> dict:
        answer = httpx.post(f"{self.http}/query", params={"q": q, "db": "bench"}, timeout=120)
        answer.raise_for_status()
        return answer.json()

    def stored(self) -> int:
        series = self.query("SELECT count(t) FROM reading")["results"][0].get("series")
        return series[0]["values"][0][1] if series else 0


def stored(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM ingest_reading").fetchone()[0]


START = datetime(2026, 1, 1, tzinfo=UTC)


def copy_ceiling(url: str, rows: int) -> float:
    """Rows per second psycopg COPYs, in one transaction, into a scratch copy of the readings table with its
    indexes and constraints (logged, as the real one): the storage's ceiling for the same number of rows."""
    rows = max(rows, 10_000)
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE ceiling (LIKE ingest_reading INCLUDING ALL)")
        columns = [r[0] for r in conn.execute("SELECT * FROM ceiling LIMIT 0").description if r[0] != "id"]
        conn.commit()
        began = time.perf_counter()
        with conn.cursor().copy(f"COPY ceiling ({', '.join(columns)}) FROM STDIN") as copy:
            for i in range(rows):
                ts = START + timedelta(milliseconds=i)  # distinct instants
                values = {"device_id": 1 + i % 100, "key": "t", "ts": ts, "value": i}
                copy.write_row([values.get(c) for c in columns])
        conn.commit()
        elapsed = time.perf_counter() - began
        conn.execute("DROP TABLE ceiling")
        return rows / elapsed


def wrk_run(base_url: str, script: Path, connections: int, seconds: float) -> dict:
    threads = min(2, connections)
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{int(seconds)}s", "--timeout", "10s", "-s", str(script),
               base_url]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    line = next((x for x in done.stdout.splitlines() if x.startswith("WRK ")), None)
    if line is None:
        raise SystemExit(f"wrk printed no summary:\n{done.stdout}\n{done.stderr}")
    return json.loads(line[4:])


@dataclass
class Peer:
    """Something else taking the same wrk load in the same run: the bare stack, or InfluxDB."""

    name: str
    http: str
    pid: int
    lua: str  # the request script's template (PER, BASE, TOKENS/DEVICES)
    stored: Callable[[], int] | None = None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--connections", default="16,64,256", help="the sweep, comma-separated")
    parser.add_argument("--per", default="1,100", help="readings per request, comma-separated")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--baseline", help="a commit: its hub is swept the same way, on a database of its own")
    parser.add_argument("--flush-ms", help="HUB_WRITER_FLUSH_MS of the hub (default: its own default)")
    parser.add_argument("--workers", type=int, default=1, help="`serve --workers` of the hub (its CPU: all of them)")
    parser.add_argument("--p99-goal", type=float, default=50.0, help="ms: a row past it breaks the sweep")
    parser.add_argument("--peers", default="stack,influxdb", help="taking the same load after each hub row ('': none)")
    parser.add_argument("--redis", default=os.environ.get("HUB_REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    rows: list[list[object]] = []
    extra = {"HUB_WRITER_FLUSH_MS": args.flush_ms} if args.flush_ms else {}
    wanted = {name for name in args.peers.split(",") if name}
    with contextlib.ExitStack() as stack:
        env = stack.enter_context(bench_database("http", redis_url=args.redis, **extra))
        peers = []
        if "stack" in wanted:
            bare = stack.enter_context(stack_running(env))
            peers.append(Peer("stack", bare.http, bare.process.pid, LUA))
        if "influxdb" in wanted:
            influx = stack.enter_context(influxdb_running())
            peers.append(Peer("InfluxDB", influx.http, influx.pid, INFLUX_LUA, influx.stored))
        trees = [("this tree", ROOT, env)]
        if args.baseline:
            root, base_env = stack.enter_context(baseline_tree(args.baseline, env, args.redis))
            trees.append((args.baseline, root, {**base_env, **extra}))
        for i, (name, root, tree_env) in enumerate(trees):
            rows += sweep(args, name, root, tree_env, peers if i == 0 else [])
    table(
        f"HTTP ingest, wrk, {args.devices} devices, a hub of {args.workers} worker(s), {args.seconds:.0f} s per row",
        [
            "code",
            "per req",
            "conns",
            "req/s",
            "readings/s",
            "p50 ms",
            "p99 ms",
            "failed",
            "acked",
            "stored",
            "÷ COPY",
            "÷ stack",
            "÷ InfluxDB",
            "cores",
            "",
        ],  # fmt: skip
        rows,
    )


@dataclass
class Load:
    """One wrk run's figures."""

    requests: float  # acked per second
    p50: float
    p99: float
    failed: int
    acked: int
    cores: float
    result: dict


def load_run(http: str, lua: str, connections: int, pid: int, seconds: float, per: int) -> Load:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(lua)
    pids = with_children(pid)
    cpu_before, began = cpu_seconds(pids), time.perf_counter()
    result = wrk_run(http, Path(script.name), connections, seconds)
    cores = (cpu_seconds(pids) - cpu_before) / (time.perf_counter() - began)
    Path(script.name).unlink()
    acked = result["requests"] - result["non2xx"]
    failed = result["non2xx"] + result["errors"]
    return Load(acked / seconds, result["p50"] / 1000, result["p99"] / 1000, failed, acked * per, cores, result)


def sweep(
    args: argparse.Namespace, name: str, root: Path, env: dict[str, str], peers: list[Peer]
) -> list[list[object]]:
    """Every (readings per request, connections) row against one hub of the code at `root`, each followed by the
    same load on the peers."""
    rows = []
    url = env["HUB_DATABASE_URL"]
    devices = devices_copy(url, args.devices, prefix="h")
    tokens = "{" + ",".join(f'"{d.token}"' for d in devices) + "}"
    with hubs_running(env, root=root, workers=args.workers) as hubs:
        hub = hubs[0]
        for per in (int(p) for p in args.per.split(",")):
            broke = None
            for connections in (int(c) for c in args.connections.split(",")):
                base = now_ms() - 86_400_000 * 30
                before = stored(url)
                load = load_run(hub.http, LUA.format(TOKENS=tokens, PER=per, BASE=base), connections,
                                hub.process.pid, args.seconds, per)  # fmt: skip
                time.sleep(1)  # the last commits answered already; let the counts settle
                got = stored(url) - before
                readings_s = got / args.seconds
                ceiling = copy_ceiling(url, got)
                ratios = {}
                peer_rows = []
                for peer in peers:
                    counted = peer.stored() if peer.stored else 0
                    script = peer.lua.format(TOKENS=tokens, PER=per, BASE=base, DEVICES=args.devices)
                    theirs = load_run(peer.http, script, connections, peer.pid, args.seconds, per)
                    kept = f"{peer.stored() - counted:,}" if peer.stored else "–"
                    ratios[peer.name] = f"{load.requests / theirs.requests:.2f}" if theirs.requests else "–"
                    peer_rows.append([peer.name, per, connections, f"{theirs.requests:,.0f}",
                                      f"{theirs.requests * per:,.0f}", f"{theirs.p50:.1f}", f"{theirs.p99:.1f}",
                                      theirs.failed, f"{theirs.acked:,}", kept, "", "", "",
                                      f"{theirs.cores:.2f}", ""])  # fmt: skip
                ok = load.p99 <= args.p99_goal and not load.failed
                rows.append([name, per, connections, f"{load.requests:,.0f}", f"{readings_s:,.0f}",
                             f"{load.p50:.1f}", f"{load.p99:.1f}", load.failed, f"{load.acked:,}", f"{got:,}",
                             f"{readings_s / ceiling:.2f}", ratios.get("stack", ""), ratios.get("InfluxDB", ""),
                             f"{load.cores:.2f}", "" if ok else "breaks"])  # fmt: skip
                rows += peer_rows
                if not ok and broke is None:
                    broke = connections
            if broke is not None:
                console.print(f"{name}: {per} reading(s) per request: breaks at {broke} connections")
    return rows


if __name__ == "__main__":
    main()
