"""The layering of the package, checked statically through setuptools' folder map.

``controller/``, ``envs/``, ``agents/`` and ``experiments/`` install as
``fitpilot.*`` through ``[tool.setuptools.package-dir]``, so import-graph tools
cannot follow ``fitpilot.envs.tasks`` to ``envs/tasks.py``. This test reads the
map from ``pyproject.toml``, parses every module's imports with ``ast``
(function-local ones included) and asserts the stack, top to bottom:

    commands, cli, the package face  >  experiments | agents  >  envs  >  baselines
    >  controller  >  ground (errors, runtime, jsonable, _version, ray_backend, keras_internals)

``baselines/`` (range test, Prodigy, the rival rules) sits beside the controller on the
deployed side: it may use the controller's Keras helpers, the controller never uses it.
Plus: neither ``controller/`` nor ``baselines/`` imports torch, stable-baselines3 or Ray;
``experiments`` and ``agents`` never import each other, and no two modules import each
other in a cycle (imports under ``if TYPE_CHECKING:`` are left out of the cycle check:
they never run).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]

#: Rank of each layer: a module may import modules of a lower rank, or of its own package.
GROUND = ("fitpilot.errors", "fitpilot.runtime", "fitpilot.jsonable", "fitpilot._version",
          "fitpilot.ray_backend", "fitpilot.keras_internals")
RANKS = {
    "ground": 0,
    "controller": 1,
    "baselines": 2,
    "envs": 3,
    "agents": 4,
    "experiments": 4,
    "face": 5,
}
#: Third-party packages a layer must never import (the deployed side runs on a core install).
_TRAINING_ONLY = ("torch", "stable_baselines3", "sb3_contrib", "ray")
FORBIDDEN = {"controller": _TRAINING_ONLY, "baselines": _TRAINING_ONLY}


@dataclass(frozen=True)
class Import:
    """One import statement of a module: the module it names, and where."""

    target: str
    line: int
    type_checking: bool


def package_dirs() -> dict[str, Path]:
    """``{"fitpilot.envs": ROOT / "envs", ...}`` from pyproject.toml."""
    with (ROOT / "pyproject.toml").open("rb") as file:
        mapping = tomllib.load(file)["tool"]["setuptools"]["package-dir"]
    return {package: ROOT / folder for package, folder in mapping.items()}


@cache
def modules() -> dict[str, Path]:
    """Every module of the package: dotted name -> file (``__init__.py`` names its package)."""
    found = {}
    for package, folder in package_dirs().items():
        for path in folder.glob("*.py"):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            found[name] = path
    return found


def layer(module: str) -> str:
    """The layer of a fitpilot module."""
    if module in GROUND:
        return "ground"
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in RANKS:
        return parts[1]
    return "face"  # fitpilot, fitpilot.cli, fitpilot.commands.*


def _resolve(name: str) -> str:
    """The longest fitpilot module that ``name`` (a module or ``module.attribute``) denotes."""
    while name and name not in modules():
        name = name.rpartition(".")[0]
    return name


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


@cache
def imports_of(module: str) -> tuple[Import, ...]:
    """Every import in ``module``'s file, at any depth, with the module it names."""
    path = modules()[module]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.stem == "__init__" else module.rpartition(".")[0]
    found: list[Import] = []

    def visit(node: ast.AST, type_checking: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, True)
            for child in node.orelse:
                visit(child, type_checking)
            return
        if isinstance(node, ast.Import):
            found.extend(Import(alias.name, node.lineno, type_checking) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package upwards
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.extend(
                Import(f"{base}.{alias.name}", node.lineno, type_checking) for alias in node.names
            )
        for child in ast.iter_child_nodes(node):
            visit(child, type_checking)

    visit(tree, False)
    return tuple(found)


def internal_edges(include_type_checking: bool) -> dict[str, set[str]]:
    """``module -> {fitpilot modules it imports}`` (itself and its own package excluded)."""
    graph: dict[str, set[str]] = {name: set() for name in modules()}
    for name in modules():
        for imp in imports_of(name):
            if imp.type_checking and not include_type_checking:
                continue
            if imp.target.split(".")[0] != "fitpilot":
                continue
            target = _resolve(imp.target)
            if target and target != name and not name.startswith(f"{target}."):
                graph[name].add(target)
    return graph


def upward_imports() -> list[str]:
    """``"file:line: a (layer) imports b (layer)"`` for each import that goes up or across."""
    problems = []
    for name, path in sorted(modules().items()):
        mine = layer(name)
        for imp in imports_of(name):
            if imp.target.split(".")[0] != "fitpilot":
                continue
            target = _resolve(imp.target)
            if not target or target == name or name.startswith(f"{target}."):
                continue
            theirs = layer(target)
            same_package = theirs == mine and mine != "face"
            if same_package or RANKS[theirs] < RANKS[mine] or (mine == theirs == "face"):
                continue
            where = f"{path.relative_to(ROOT)}:{imp.line}"
            problems.append(f"{where}: {name} ({mine}) imports {target} ({theirs})")
    return problems


def forbidden_imports() -> list[str]:
    problems = []
    for name, path in sorted(modules().items()):
        banned = FORBIDDEN.get(layer(name), ())
        for imp in imports_of(name):
            if imp.target.split(".")[0] in banned:
                where = f"{path.relative_to(ROOT)}:{imp.line}"
                problems.append(f"{where}: {name} imports {imp.target}")
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                connect(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


# --- the tests ---------------------------------------------------------------------


def test_the_map_finds_every_layer() -> None:
    layers = {layer(name) for name in modules()}
    assert layers == set(RANKS), layers
    assert "fitpilot.envs.tasks" in modules()
    assert modules()["fitpilot.envs.tasks"] == ROOT / "envs" / "tasks.py"


def test_no_module_imports_upwards() -> None:
    assert upward_imports() == []


def test_controller_never_imports_torch_or_stable_baselines3() -> None:
    assert forbidden_imports() == []


def test_no_import_cycles() -> None:
    assert cycles(internal_edges(include_type_checking=False)) == []


def test_the_checks_catch_a_planted_upward_import(monkeypatch: pytest.MonkeyPatch) -> None:
    """A controller module that imports the agents is reported (the test is not vacuous)."""
    planted = (Import("fitpilot.agents.train", 1, False), Import("torch", 2, False))
    real = imports_of.__wrapped__  # type: ignore[attr-defined]

    def with_plant(module: str) -> tuple[Import, ...]:
        extra = planted if module == "fitpilot.controller.actions" else ()
        return real(module) + extra

    monkeypatch.setattr(f"{__name__}.imports_of", with_plant)
    assert any("fitpilot.agents.train (agents)" in line for line in upward_imports())
    assert any("imports torch" in line for line in forbidden_imports())


def test_the_checks_catch_the_controller_importing_a_baseline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The deployed controller may not lean on a baseline (the other way round is fine)."""
    real = imports_of.__wrapped__  # type: ignore[attr-defined]

    def with_plant(module: str) -> tuple[Import, ...]:
        extra = (
            (Import("fitpilot.baselines.prodigy", 1, False),)
            if module == "fitpilot.controller.callback"
            else ()
        )
        return real(module) + extra

    monkeypatch.setattr(f"{__name__}.imports_of", with_plant)
    assert any("fitpilot.baselines.prodigy (baselines)" in line for line in upward_imports())


def test_the_cycle_check_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_the_static_link_tree_of_the_makefile_follows_the_map() -> None:
    """``make setup`` links build/static/fitpilot/<sub> to each mapped folder, for pyright/IDEs."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    line = next(row for row in makefile.splitlines() if "for folder in" in row)
    linked = set(line.split("for folder in", 1)[1].split(";", 1)[0].split())
    mapped = {  # subpackages whose folder sits at the root, not inside fitpilot/
        package.split(".", 1)[1]
        for package, folder in package_dirs().items()
        if package.count(".") == 1 and folder.parent == ROOT
    }
    assert linked == mapped
