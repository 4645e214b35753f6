"""The layout rules of docs/architecture.md, read from the source.

* The library sits at the bottom: no module of ``hospital_mlops`` outside ``hospital_mlops.cli``
  imports a door (``serving``, ``pipelines``, ``components``), kfp, kserve or the CLI.
* The doors never import the CLI.
* No two public classes share a name; no module uses another's private names.
* Importing the library changes no environment variable; MLflow is imported only after its
  telemetry is switched off.
* No import cycle between modules, counting imports inside functions too (a function-level
  import hides a cycle from the interpreter, not from a reader).
"""

from __future__ import annotations

import ast
import graphlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("hospital_mlops", "serving", "components", "pipelines")
DOORS = ("serving", "pipelines", "components")
CLUSTER_CLIENTS = ("kfp", "kfp_server_api", "kserve")
FACE = "hospital_mlops.cli"


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, dotted name) of every absolute import, wherever it sits in the module."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import"
            assert node.module is not None
            out += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return out


def _owner(name: str) -> str | None:
    """The project module a dotted import name lands in (``a.b.func`` → ``a.b``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _in(name: str, roots: tuple[str, ...]) -> bool:
    return any(name == r or name.startswith(r + ".") for r in roots)


def test_the_rules_see_the_project() -> None:
    # a glob that matched nothing would pass every rule below
    assert "hospital_mlops.cli.main" in MODULES
    assert "serving.predictor" in MODULES
    assert len([m for m in MODULES if m.startswith("hospital_mlops.")]) > 50


@pytest.mark.parametrize(
    "module",
    sorted(m for m in MODULES if _in(m, ("hospital_mlops",)) and not _in(m, (FACE,))),
)
def test_the_library_imports_no_door(module: str) -> None:
    forbidden = (*DOORS, *CLUSTER_CLIENTS, FACE)
    bad = [
        f"line {line}: {name}" for line, name in _imports(MODULES[module]) if _in(name, forbidden)
    ]
    assert not bad, f"{module} (library) imports a door: {bad}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _in(m, DOORS)))
def test_the_doors_never_import_the_cli(module: str) -> None:
    bad = [f"line {line}: {name}" for line, name in _imports(MODULES[module]) if _in(name, (FACE,))]
    assert not bad, f"{module} (a door) imports the CLI: {bad}"


def test_no_import_cycle_between_modules() -> None:
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        targets = {_owner(name) for _, name in _imports(path)}
        # a package's own __init__ importing its parent is not a cycle worth a name
        graph[module] = {t for t in targets if t and t != module and not module.startswith(t + ".")}
    try:
        list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        # graphlib names the cycle by predecessors; reversed, each arrow reads "imports"
        pytest.fail(f"import cycle: {' → '.join(reversed(exc.args[1]))}")


def _room(module: str) -> str:
    """A sub-package of ``hospital_mlops`` (or a module at its root), or a door package."""
    parts = module.split(".")
    if parts[0] != "hospital_mlops":
        return parts[0]
    if len(parts) > 2 or (len(parts) == 2 and (ROOT / "hospital_mlops" / parts[1]).is_dir()):
        return ".".join(parts[:2])
    return module


def test_no_import_cycle_between_rooms() -> None:
    # a cycle between rooms hides behind imports inside functions and makes neither room
    # understandable alone (governance ↔ rollout, monitoring ↔ rollout before the steps room)
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        room = _room(module)
        targets = {_room(t) for t in (_owner(n) for _, n in _imports(path)) if t}
        graph.setdefault(room, set()).update(t for t in targets if t != room)
    graph.pop("hospital_mlops", None)  # the package's own __init__ is no room
    for deps in graph.values():
        deps.discard("hospital_mlops")
    try:
        list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        pytest.fail(f"import cycle between rooms: {' → '.join(reversed(exc.args[1]))}")


def _private_uses(path: Path) -> list[str]:
    """Private names (``_x``, not dunders) one project module takes from another: imported by
    name, or read as an attribute of an imported project module."""
    tree = ast.parse(path.read_text(), str(path))
    modules: dict[str, str] = {}  # local name → project module it is bound to
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and _owner(node.module):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"line {node.lineno}: from {node.module} import {alias.name}")
                if f"{node.module}.{alias.name}" in MODULES:
                    modules[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MODULES and alias.asname:
                    modules[alias.asname] = alias.name
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            found.append(f"line {node.lineno}: {modules[node.value.id]}.{node.attr}")
    return found


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_private_name_is_taken_across_modules(module: str) -> None:
    bad = _private_uses(MODULES[module])
    assert not bad, f"{module} uses another module's private names: {bad}"


# set by third-party libraries when they are imported, not by ours
THIRD_PARTY_IMPORT_ENV = {
    "KMP_INIT_AT_FORK",  # threadpoolctl / joblib (scikit-learn)
    "KMP_DUPLICATE_LIB_OK",  # scikit-learn
}
_CLEAN_ENV = {
    k: v
    for k, v in os.environ.items()
    if k not in ("MLFLOW_DISABLE_TELEMETRY", "GX_ANALYTICS_ENABLED", "DO_NOT_TRACK")
}


def _run(code: str, **env: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={**_CLEAN_ENV, **env},
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_importing_the_library_changes_no_environment_variable() -> None:
    found = _run(
        "import importlib, json, os, pkgutil, sys\n"
        "before = dict(os.environ)\n"
        "import hospital_mlops\n"
        "names = [m.name for m in pkgutil.walk_packages(hospital_mlops.__path__, 'hospital_mlops.')"
        " if not m.name.endswith('__main__') and '_egress_site' not in m.name]\n"
        "for name in names: importlib.import_module(name)\n"
        "after = dict(os.environ)\n"
        "changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))\n"
        "print(json.dumps({'modules': len(names), 'changed': changed,"
        " 'mlflow_imported': 'mlflow' in sys.modules}))\n"
    )
    assert found["modules"] > 100  # the walk found the package
    assert set(found["changed"]) <= THIRD_PARTY_IMPORT_ENV, found["changed"]
    # MLflow starts its telemetry when imported unless switched off first: the library imports
    # it only on the way to the registry, after switching it off
    assert not found["mlflow_imported"]


def test_opening_the_registry_switches_telemetry_off_first(tmp_path: Path) -> None:
    found = _run(
        "import json, os\n"
        "from hospital_mlops.governance import registry\n"
        "registry.client()\n"
        "from mlflow.telemetry.utils import is_telemetry_disabled\n"
        "print(json.dumps({'disabled': is_telemetry_disabled(),"
        " 'switches': [os.environ.get(k) for k in"
        " ('MLFLOW_DISABLE_TELEMETRY', 'GX_ANALYTICS_ENABLED', 'DO_NOT_TRACK')]}))\n",
        HMLOPS_STATE_DIR=str(tmp_path),
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}",
    )
    assert found == {"disabled": True, "switches": ["true", "false", "1"]}


def test_no_two_public_classes_share_a_name() -> None:
    # "GateResult" meant a data gate's result in one room and a rollout stage's in another;
    # a reader (and an import) should never have to ask which
    defined: dict[str, list[str]] = {}
    for module, path in MODULES.items():
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                defined.setdefault(node.name, []).append(module)
    shared = {name: where for name, where in defined.items() if len(where) > 1}
    assert not shared, shared


# The rooms from the bottom up (docs/architecture.md draws the same picture). A room imports only
# rooms in layers below its own: rooms that share a layer are independent of each other.
LAYERS: tuple[tuple[str, ...], ...] = (
    (
        "hospital_mlops.paths",
        "hospital_mlops.quiet",
        "hospital_mlops.config_files",
        "hospital_mlops.store_schema",
        "hospital_mlops.artifacts",
    ),
    ("hospital_mlops.use_case", "hospital_mlops.render"),
    ("hospital_mlops.data",),
    ("hospital_mlops.features",),
    ("hospital_mlops.validation", "hospital_mlops.model"),
    ("hospital_mlops.governance",),
    ("hospital_mlops.inference", "hospital_mlops.drift", "hospital_mlops.deploy"),
    ("hospital_mlops.monitoring",),
    ("hospital_mlops.ehr", "hospital_mlops.security", "hospital_mlops.rollout"),
    ("hospital_mlops.steps", "hospital_mlops._egress_site"),
    ("components", "serving"),
    ("pipelines",),
    ("hospital_mlops.cli",),
)
LAYER_OF = {room: n for n, rooms in enumerate(LAYERS) for room in rooms}
# the only library modules that import MLflow: the registry's reads and writes, and the two
# pieces MLflow itself loads (the pyfunc class, the local artifact repository)
MLFLOW_GATEWAY = {
    "hospital_mlops.governance.registry",
    "hospital_mlops.governance.registration",
    "hospital_mlops.governance.pyfunc",
    "hospital_mlops.governance.local_artifacts",
}
PAGE_SHELL = "hospital_mlops.render.page"
# the few modules the package's root keeps: where things are, and what every room reads
ROOT_MODULES = {
    "hospital_mlops.artifacts",
    "hospital_mlops.config_files",
    "hospital_mlops.paths",
    "hospital_mlops.quiet",
    "hospital_mlops.store_schema",
    "hospital_mlops.use_case",
}


def test_every_room_has_a_layer() -> None:
    rooms = {_room(m) for m in MODULES} - {"hospital_mlops"}
    assert not rooms - set(LAYER_OF), f"rooms with no layer in LAYERS: {rooms - set(LAYER_OF)}"
    assert not set(LAYER_OF) - rooms, (
        f"layers name rooms that do not exist: {set(LAYER_OF) - rooms}"
    )


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _room(m) != "hospital_mlops"))
def test_a_room_imports_only_the_layers_below_it(module: str) -> None:
    room = _room(module)
    bad = []
    for line, name in _imports(MODULES[module]):
        target = _owner(name)
        if target is None or _room(target) in (room, "hospital_mlops"):
            continue
        other = _room(target)
        if LAYER_OF.get(other, -1) >= LAYER_OF.get(room, -1):
            bad.append(f"line {line}: {name} ({other})")
    assert not bad, f"{module} ({room}) imports a room at or above its own layer: {bad}"


def test_the_root_holds_packages_and_a_few_modules() -> None:
    root = {m for m in MODULES if _room(m) == m and m.startswith("hospital_mlops.")}
    root -= {m for m in root if (ROOT / m.replace(".", "/")).is_dir()}
    assert root == ROOT_MODULES


@pytest.mark.parametrize("module", sorted(MODULES))
def test_only_the_registry_imports_mlflow(module: str) -> None:
    if module in MLFLOW_GATEWAY:
        return
    bad = [
        f"line {line}: {name}" for line, name in _imports(MODULES[module]) if _in(name, ("mlflow",))
    ]
    assert not bad, f"{module} imports MLflow; ask governance.registry (or registration): {bad}"


def test_the_gateway_is_where_the_rule_says() -> None:
    for module in MLFLOW_GATEWAY:
        assert any(_in(n, ("mlflow",)) for _, n in _imports(MODULES[module])), module


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_html_page_comes_from_the_one_shell(module: str) -> None:
    if module == PAGE_SHELL:
        assert "<html" in MODULES[module].read_text()
        return
    assert "<html" not in MODULES[module].read_text().lower(), (
        f"{module} writes its own HTML document; use render.page.page()"
    )


ARTIFACT_NAMES = (
    "training.json",
    "test_predictions.parquet",
    "evaluation.json",
    "gates.json",
    "golden.parquet",
    "validation_report.html",
    "validation_report.md",
    "model_card.html",
    "model_card.json",
    "drift_reference.parquet",
    "monitoring_report.html",
    "drift_baseline.json",
    "hti1_source_attributes.json",
)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != "hospital_mlops.artifacts"))
def test_artifact_names_and_store_paths_live_in_one_module(module: str) -> None:
    # a literal name elsewhere would silently miss a rename in hospital_mlops/artifacts.py
    tree = ast.parse(MODULES[module].read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
    }
    bad = [
        f"line {node.lineno}: {node.value!r}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
        and (node.value in ARTIFACT_NAMES or re.fullmatch(r"evidence/[\w.]*", node.value))
    ]
    assert not bad, f"{module} names artifacts itself; use hospital_mlops.artifacts: {bad}"


def test_the_architecture_page_names_only_files_that_exist() -> None:
    # a file named there that the repository lacks is a reader sent nowhere
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    text = (ROOT / "docs" / "architecture.md").read_text()
    named = set(re.findall(r"(?<![\w./-])((?:[\w-]+/)*[\w-]+\.(?:py|yaml|md))\b", text))
    assert len(named) > 40  # the pattern sees the page's file names
    outside = {"DESIGN.md"}  # the project's design brief, kept beside the repository
    missing = sorted(
        name
        for name in named - outside
        if not any(f == name or f.endswith("/" + name) for f in tracked)
    )
    assert not missing, f"docs/architecture.md names files the repository lacks: {missing}"


MAX_MODULE_LINES = 600


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _in(m, ("hospital_mlops",))))
def test_no_library_module_is_over_600_lines(module: str) -> None:
    # a module past this holds several jobs; split it by job (docs/architecture.md)
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{module} has {lines} lines"
