"""Bulk provisioning rate: 10,000 devices (each with its random token, hashed as the registry stores it) created
in one transaction through `POST /api/v1/devices/bulk` (JSON and CSV) of a served hub and through
`importdevices` (a fresh process: Django start-up included), against a scratch PostgreSQL database.

    .venv/bin/python bench/provisioning.py [--devices 10000 --rounds 3]
"""

import argparse
import csv
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from harness import ROOT, bench_database, console, hubs_running, table


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"manage.py {' '.join(args)}: {done.stderr[-2000:]}")
    return done.stdout


def devices_csv(prefix: str, count: int) -> str:
    out = io.StringIO()
    rows = csv.writer(out, lineterminator="\n")
    rows.writerow(["key", "name", "labels"])
    rows.writerows([f"{prefix}{i:06}", f"Sensor {i}", f"site=s{i % 20}, model=tx-200"] for i in range(count))
    return out.getvalue()


def timed_post(client: httpx.Client, count: int, prefix: str, *, as_csv: bool) -> float:
    if as_csv:
        body = {"content": devices_csv(prefix, count).encode(), "headers": {"Content-Type": "text/csv"}}
    else:
        devices = [
            {"key": f"{prefix}{i:06}", "name": f"Sensor {i}", "labels": {"site": f"s{i % 20}", "model": "tx-200"}}
            for i in range(count)
        ]
        body = {"json": {"devices": devices}}
    start = time.perf_counter()
    response = client.post("/api/v1/devices/bulk", **body)
    elapsed = time.perf_counter() - start
    if response.status_code != 201 or response.json()["created"] != count:
        raise SystemExit(f"bulk import failed: {response.status_code} {response.text[:500]}")
    return elapsed


def timed_import(env: dict[str, str], count: int, prefix: str, workdir: Path) -> float:
    source, tokens = workdir / f"{prefix}.csv", workdir / f"{prefix}-tokens.csv"
    source.write_text(devices_csv(prefix, count))
    start = time.perf_counter()
    manage(env, "importdevices", str(source), "--tokens-out", str(tokens))
    elapsed = time.perf_counter() - start
    if sum(1 for _ in tokens.open()) != count + 1:
        raise SystemExit("importdevices wrote the wrong number of tokens")
    return elapsed


def run(args: argparse.Namespace) -> None:
    with bench_database("provisioning", redis_url="redis://127.0.0.1:6379/12") as env:
        manage({**env, "DJANGO_SUPERUSER_PASSWORD": "bench"}, "createsuperuser", "--noinput", "--username", "bench",
               "--email", "bench@example.invalid")  # fmt: skip
        token = manage(env, "createapitoken", "bench", "--scope", "write").strip().splitlines()[-1]
        times: dict[str, list[float]] = {"POST /api/v1/devices/bulk (JSON)": [], "POST /api/v1/devices/bulk (CSV)": []}
        times["manage.py importdevices (process start included)"] = []
        with hubs_running(env) as (hub,), tempfile.TemporaryDirectory() as workdir:
            headers = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=hub.http, headers=headers, timeout=120) as client:
                for r in range(args.rounds):
                    for name, measure in zip(times, ("json", "csv", "import"), strict=True):
                        prefix = f"{measure}{r}-"
                        if measure == "import":
                            elapsed = timed_import(env, args.devices, prefix, Path(workdir))
                        else:
                            elapsed = timed_post(client, args.devices, prefix, as_csv=measure == "csv")
                        times[name].append(elapsed)
                        console.print(f"{name}: {args.devices:,} devices in {elapsed:.2f} s")
        rows = []
        for name, seconds in times.items():
            median = statistics.median(seconds)
            rows.append((name, f"{args.devices:,}", f"{median:.2f}", f"{args.devices / median:,.0f}"))
        table(f"Bulk provisioning, median of {args.rounds} (os.cpu_count()={os.cpu_count()})",
              ["path", "devices", "seconds", "devices/s"], rows)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    run(parser.parse_args())


if __name__ == "__main__":
    main()
