"""The experiment package's import graph: no cycles, and no import of a later stage.

Every ``import`` / ``from ... import`` of every module under ``src/polyemo/experiment`` is
read from its syntax tree -- module-level, inside functions and under ``TYPE_CHECKING`` alike
-- so an import made lazily to dodge a cycle still counts as an edge.
"""

from __future__ import annotations

import ast
from pathlib import Path

import polyemo.experiment

PACKAGE = "polyemo.experiment"
ROOT = Path(polyemo.experiment.__file__).parent
#: stages after the experiment: it may never import them
LATER_STAGES = ("polyemo.predict", "polyemo.serve", "polyemo.cli")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join((PACKAGE, *parts)).removesuffix(".__init__")


def _imports(path: Path, name: str, modules: set[str]) -> set[str]:
    """Every module ``path`` imports (resolved to a module of the package where it names one)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            submodules = {f"{target}.{alias.name}" for alias in node.names} & modules
            found.update(submodules or {target})
    return found


def _graph() -> dict[str, set[str]]:
    paths = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}
    modules = set(paths)
    return {name: _imports(path, name, modules) for name, path in paths.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    inner = {m: {t for t in targets if t in graph and t != m} for m, targets in graph.items()}
    cycles, state = [], {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = "open"
        for target in sorted(inner[module]):
            if state.get(target) == "open":
                cycles.append(trail[trail.index(target):] + [target])
            elif target not in state:
                visit(target, [*trail, target])
        state[module] = "done"

    for module in sorted(inner):
        if module not in state:
            visit(module, [module])
    return cycles


def test_the_graph_is_read():
    graph = _graph()
    assert f"{PACKAGE}.run" in graph and f"{PACKAGE}.plan" in graph
    assert f"{PACKAGE}.selection" in graph[f"{PACKAGE}.run"]  # a function-level or module-level edge


def test_no_import_cycle_inside_the_experiment_package():
    graph = {m: t for m, t in _graph().items() if m != PACKAGE}  # the package's face only hands names on
    assert _cycles(graph) == []


def test_the_experiment_imports_no_later_stage():
    offending = {m: sorted(t for t in targets if t.startswith(LATER_STAGES))
                 for m, targets in _graph().items()}
    assert {m: t for m, t in offending.items() if t} == {}


def test_early_stages_import_no_later_experiment_stage():
    """config -> plan -> inputs -> fit (selection) -> score -> report -> final -> run -> bench; export last."""
    order = ["errors", "specs", "config", "data", "plan", "inputs", "selection", "score", "report", "final",
             "run", "grid", "leaderboard", "bench", "export"]
    graph = _graph()
    rank = {f"{PACKAGE}.{name}": i for i, name in enumerate(order)}
    later = {m: sorted(t for t in graph[m] if t in rank and rank[t] > rank[m]) for m in rank if m in graph}
    assert {m: t for m, t in later.items() if t} == {}
