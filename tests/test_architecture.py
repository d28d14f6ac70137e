"""The package map of docs/architecture.md holds: who may import whom, and no process state in a module.

Both are read off the source with `ast` (imports under `if TYPE_CHECKING:` do not count: they are types only)."""

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import ROOT
from tests.imports import imported_packages

# What each package may import of the others (docs/architecture.md, "Packages"). Management commands are entry
# points: they build their process and may import `hub` (its configuration and runtime) besides.
ARROWS: dict[str, set[str]] = {
    "core": set(),
    "devices": {"core"},
    "accounts": {"core", "devices"},
    "control": {"core", "devices"},
    "storage": {"core", "devices"},
    "ingest": {"core", "devices", "storage"},
    "history": {"core", "devices", "storage"},
    "live": {"core", "devices", "accounts", "ingest", "history"},
    "transports": {"core", "devices", "ingest", "control"},
    "alerts": {"core", "devices", "accounts", "storage", "ingest", "history", "live"},
    "api": {"core", "devices", "accounts", "storage", "history", "alerts", "control"},
    "dashboards": {"core", "devices", "accounts", "history", "alerts", "control"},
    "bridge": {"core", "devices", "storage", "ingest", "control"},
    "clients": {"core", "devices", "ingest"},
    "hub": {
        "core",
        "devices",
        "accounts",
        "control",
        "storage",
        "ingest",
        "history",
        "live",
        "transports",
        "alerts",
        "api",
        "dashboards",
        "clients",
    },
    "testkit": set(),
}
PACKAGES = set(ARROWS)


def modules_of(package: str) -> Iterator[Path]:
    yield from (p for p in sorted((ROOT / package).rglob("*.py")) if "migrations" not in p.parts)


def test_every_package_imports_only_what_the_map_allows():
    """core imports no app, not even for typing; storage no pipeline; the pipeline no transport, page or API."""
    wrong = []
    for package, allowed in ARROWS.items():
        for path in modules_of(package):
            run_time, typing_only = imported_packages(path)
            everything = run_time | (typing_only if package == "core" else set())
            entry_point = "commands" in path.parts
            extra = (everything & PACKAGES) - allowed - {package} - ({"hub"} if entry_point else set())
            if extra:
                wrong.append(f"{path.relative_to(ROOT)} imports {sorted(extra)}")
    assert not wrong, wrong


def test_the_map_names_every_package_of_the_tree():
    """A new top-level package gets its arrows (and its line in docs/architecture.md) before it lands."""
    tree = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "bench"}
    assert tree == PACKAGES, tree ^ PACKAGES
    documented = (ROOT / "docs" / "architecture.md").read_text()
    assert all(f"`{package}/`" in documented for package in PACKAGES), "docs/architecture.md lists every package"


# Process state ----------------------------------------------------------------------------------------------

# Module-level objects made by a call that are not state: each is immutable, stateless, or process-wide by design.
NOT_STATE_CALLS = {
    "logging.getLogger",  # loggers are the logging module's registry
    "re.compile",
    "ContextVar",  # per task by construction (the request id)
    "Counter",  # Prometheus metrics: one registry per process, scraped at /metrics (core/metrics.py)
    "Gauge",
    "Histogram",
    "WriteSql",  # frozen dataclasses of SQL text
    "dict.fromkeys",  # a constant mapping, never mutated (checked below)
    "ipaddress.IPv4Network",  # immutable values
    "ipaddress.IPv6Network",
    "type",
    "TypeVar",  # a typing construct
    "Actor",  # frozen dataclasses of the policy (accounts/policy.py: NOBODY)
    "PolymorphicProxySerializer",  # a description of the OpenAPI schema (api/shapes.py)
    "Signal",  # Django's signals: receivers connected once, at start-up (AppConfig.ready)
}
# Module-level objects that are the process's by design, each with its reason.
PROCESS_WIDE = {
    ("storage/engines.py", "POSTGRES"): "a stateless engine: SQL text and its stateless TimescaleDB extension",
    ("storage/sqlite.py", "SQLITE"): "a stateless engine",
    ("storage/engine.py", "ALONE"): "the turn of a write that overlaps nothing: no state",
    ("hub/asgi.py", "django_app"): "Django's ASGI handler, which the ASGI server serves",
    ("hub/asgi.py", "application"): "the ASGI application; its runtime lives in the lifespan state",
    ("devices/provisioning.py", "_NO_PROFILE_HASH"): "a constant string (a hash compared in constant time)",
}
MUTATORS = {
    "append",
    "extend",
    "insert",
    "update",
    "add",
    "discard",
    "remove",
    "pop",
    "popitem",
    "clear",
    "setdefault",
    "sort",
    "reverse",
    "appendleft",
    "popleft",
}
CONTAINERS = (ast.List, ast.Dict, ast.Set, ast.ListComp, ast.DictComp, ast.SetComp)
CONSTANT_CALLS = ("str.format", "join", "format")


def _call_name(call: ast.Call) -> str:
    name = ast.unparse(call.func)
    return "join" if name.endswith(".join") else "format" if name.endswith(".format") else name


def _mutated_names(tree: ast.Module) -> set[str]:
    """Names and `Class.attribute`s mutated anywhere in a module: mutator calls, item or attribute assignment."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in MUTATORS:
            found.add(ast.unparse(node.func.value))
        elif isinstance(node, ast.Assign | ast.AugAssign | ast.Delete):
            targets = node.targets if isinstance(node, ast.Assign | ast.Delete) else [node.target]
            for target in targets:
                if isinstance(target, ast.Subscript):
                    found.add(ast.unparse(target.value))
                elif isinstance(target, ast.Attribute):
                    found.add(ast.unparse(target))
    return found


def state_findings(path: Path, root: Path = ROOT) -> list[str]:
    tree = ast.parse(path.read_text())
    where = str(path.relative_to(root))
    mutated = _mutated_names(tree)
    classes = {node.name for node in tree.body if isinstance(node, ast.ClassDef)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Global):
            found.append(f"{where}: `global {', '.join(node.names)}`")
        if isinstance(node, ast.AugAssign | ast.Assign):
            targets = [node.target] if isinstance(node, ast.AugAssign) else node.targets
            for target in targets:
                if isinstance(target, ast.Attribute) and ast.unparse(target.value) in classes | {"cls"}:
                    found.append(f"{where}: class attribute `{ast.unparse(target)}` changed")
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.Assign | ast.AnnAssign) and isinstance(item.value, (*CONTAINERS, ast.Call)):
                    for target in item.targets if isinstance(item, ast.Assign) else [item.target]:
                        name = ast.unparse(target)
                        if {f"cls.{name}", f"{node.name}.{name}"} & mutated:
                            found.append(f"{where}: class attribute `{node.name}.{name}` is mutated")
        if not isinstance(node, ast.Assign | ast.AnnAssign) or node.value is None:
            continue
        for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
            name = ast.unparse(target)
            value = node.value
            if (where, name) in PROCESS_WIDE:
                continue
            if isinstance(value, ast.Call) and _call_name(value) not in NOT_STATE_CALLS | set(CONSTANT_CALLS):
                found.append(f"{where}: `{name}` is an object made at import ({ast.unparse(value.func)})")
            elif isinstance(value, (*CONTAINERS, ast.Call)) and name in mutated:
                found.append(f"{where}: module-level `{name}` is mutated")
            elif (
                isinstance(value, CONTAINERS)
                and not (name.isupper() or name.lstrip("_").isupper())
                and name != "urlpatterns"
            ):
                found.append(f"{where}: `{name}` is a mutable container at module level (a constant is UPPER_CASE)")
            elif isinstance(value, ast.Constant) and value.value is None:
                found.append(f"{where}: `{name} = None` at module level (a singleton waiting to be set)")
    return found


def test_no_module_holds_process_state():
    """Every long-lived part belongs to a runtime (hub/runtime.py), never to a module: no `global`, no object made
    at import that keeps state, no module-level or class-level container that anything changes."""
    found = [
        finding
        for package in PACKAGES - {"testkit"}
        for path in modules_of(package)
        if path.name != "settings.py"  # Django's settings: configuration, read at start-up
        for finding in state_findings(path)
    ]
    assert not found, found


def test_the_guard_finds_what_slipped_past_the_old_regex(tmp_path):
    """The kinds of state issue 21 found past a `_x = None` regex: a thread pool made at import, a class counter
    bumped by its instances, a module-level throttled log, a class-level set that remembers across instances."""
    source = tmp_path / "sample.py"
    source.write_text(
        "from concurrent.futures import ThreadPoolExecutor\n"
        "_POOL = ThreadPoolExecutor(max_workers=2)\n"
        "_layer_down = ThrottledLog(logger)\n"
        "class Outbox:\n"
        "    sent = 0\n"
        "    def done(self):\n"
        "        Outbox.sent += 1\n"
        "class Pipeline:\n"
        "    _unusable: set[type] = set()\n"
        "    @classmethod\n"
        "    def of(cls, layer):\n"
        "        cls._unusable.add(type(layer))\n"
        "_cache = {}\n"
        "_current = None\n"
    )
    findings = "\n".join(state_findings(source, tmp_path))
    for name in ("_POOL", "_layer_down", "Outbox.sent", "Pipeline._unusable", "_cache", "_current"):
        assert f"`{name}" in findings, (name, findings)


def test_the_ingest_pipeline_imports_without_alerts_pages_or_the_api():
    """Importing the writer, the ingest service, the transports and the read side loads nothing of alerts,
    dashboards or the operator API (a process that only ingests carries none of them)."""
    code = (
        "import django, os, sys; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'hub.settings'); "
        "from django.conf import settings; settings.INSTALLED_APPS[:] = [a for a in settings.INSTALLED_APPS "
        "if a not in ('alerts', 'dashboards', 'api')]; django.setup(); "
        "import ingest.writer, ingest.service, transports.websocket, transports.http, history.selectors; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('alerts', 'dashboards', 'api', 'hub')))"
    )
    env = {"HUB_VAR_DIR": str(ROOT / "var"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    loaded = [m for m in eval(done.stdout.strip().splitlines()[-1]) if not m.startswith("hub.settings")]  # noqa: S307
    assert not [m for m in loaded if m.split(".")[0] in ("alerts", "dashboards", "api")], loaded
