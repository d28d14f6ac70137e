"""HTTP ingest with a client that is not the hub's own: `wrk` POSTs ThingsBoard-style telemetry for D devices to
`POST /api/v1/<TOKEN>/telemetry` of a hub (`manage.py serve`, PostgreSQL + Redis), each request answered only after
its commit, swept over connections until something breaks, and every acked reading counted in the database.

    .venv/bin/python bench/http_ingest.py                                  # 1 and 100 readings per request, 10 s each
    .venv/bin/python bench/http_ingest.py --connections 16,64,256 --per 1 --seconds 20
    .venv/bin/python bench/http_ingest.py --baseline c65c40e~1         # the same sweep on a commit's hub too

Every reading has its own ts, so nothing dedupes: stored must equal acked (`lost` 0). The ceiling printed beside
each row is psycopg COPYing the same number of rows into a scratch table in the same run. A row breaks when its
p99 passes --p99-goal ms or a request fails; the first such is printed as where the sweep breaks. `wrk` comes
from Debian's package (`apt-get install wrk`). Loopback only; a scratch database is created and dropped.
"""

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from harness import ROOT, baseline_tree, bench_database, console, cpu_seconds, devices_copy, hubs_running, table

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--connections", default="16,64,256", help="the sweep, comma-separated")
    parser.add_argument("--per", default="1,100", help="readings per request, comma-separated")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--baseline", help="a commit: its hub is swept the same way, on a database of its own")
    parser.add_argument("--flush-ms", help="HUB_WRITER_FLUSH_MS of the hub (default: its own default)")
    parser.add_argument("--p99-goal", type=float, default=50.0, help="ms: a row past it breaks the sweep")
    parser.add_argument("--redis", default=os.environ.get("HUB_REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    rows: list[list[object]] = []
    extra = {"HUB_WRITER_FLUSH_MS": args.flush_ms} if args.flush_ms else {}
    with contextlib.ExitStack() as stack:
        env = stack.enter_context(bench_database("http", redis_url=args.redis, **extra))
        trees = [("this tree", ROOT, env)]
        if args.baseline:
            root, base_env = stack.enter_context(baseline_tree(args.baseline, env, args.redis))
            trees.append((args.baseline, root, {**base_env, **extra}))
        for name, root, tree_env in trees:
            rows += sweep(args, name, root, tree_env)
    table(
        f"HTTP ingest, wrk, {args.devices} devices, one hub process, {args.seconds:.0f} s per row",
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
            "hub cores",
            "",
        ],  # fmt: skip
        rows,
    )


def sweep(args: argparse.Namespace, name: str, root: Path, env: dict[str, str]) -> list[list[object]]:
    """Every (readings per request, connections) row against one hub of the code at `root`."""
    rows = []
    url = env["HUB_DATABASE_URL"]
    devices = devices_copy(url, args.devices, prefix="h")
    with hubs_running(env, root=root) as hubs:
        hub = hubs[0]
        for per in (int(p) for p in args.per.split(",")):
            broke = None
            for connections in (int(c) for c in args.connections.split(",")):
                with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
                    tokens = "{" + ",".join(f'"{d.token}"' for d in devices) + "}"
                    lua.write(LUA.format(TOKENS=tokens, PER=per, BASE=now_ms() - 86_400_000 * 30))
                before, cpu_before = stored(url), cpu_seconds([hub.process.pid])
                began = time.perf_counter()
                result = wrk_run(hub.http, Path(lua.name), connections, args.seconds)
                elapsed = time.perf_counter() - began
                cpu = cpu_seconds([hub.process.pid]) - cpu_before
                Path(lua.name).unlink()
                time.sleep(1)  # the last commits answered already; let the counts settle
                acked_requests = result["requests"] - result["non2xx"]
                got = stored(url) - before
                ceiling = copy_ceiling(url, got)
                readings_s = got / args.seconds
                ok = result["p99"] / 1000 <= args.p99_goal and not result["non2xx"] and not result["errors"]
                rows.append([name, per, connections, f"{acked_requests / args.seconds:,.0f}", f"{readings_s:,.0f}",
                             f"{result['p50'] / 1000:.1f}", f"{result['p99'] / 1000:.1f}",
                             result["non2xx"] + result["errors"], f"{acked_requests * per:,}", f"{got:,}",
                             f"{readings_s / ceiling:.2f}", f"{cpu / elapsed:.2f}",
                             "" if ok else "breaks"])  # fmt: skip
                if not ok and broke is None:
                    broke = connections
            if broke is not None:
                console.print(f"{name}: {per} reading(s) per request: breaks at {broke} connections")
    return rows


if __name__ == "__main__":
    main()
