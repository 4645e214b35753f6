"""The layout rules of docs/architecture.md, read from the source.

* The library sits at the bottom: no module of ``hospital_mlops`` outside ``hospital_mlops.cli``
  imports a door (``serving``, ``pipelines``, ``components``), kfp, kserve or the CLI.
* The doors never import the CLI.
* No import cycle between modules, counting imports inside functions too (a function-level
  import hides a cycle from the interpreter, not from a reader).
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

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
