"""The layout rules of docs/architecture.md, checked on the import graph of src/polyemo.

The graph is read from the source (``ast``), not by importing: every ``import`` and
``from ... import`` at module level and inside functions (``TYPE_CHECKING`` blocks
included), relative imports resolved. ``from polyemo.train import Trainer`` is an edge to
the module the package re-exports the name from (``polyemo.train.trainer``), not to the
package's ``__init__``. Two kinds of import are not edges:

* a module taking a name that its own ancestor package defines (``from polyemo.heads import
  HEADS`` inside ``polyemo/heads/linear.py``): the registry pattern; Python runs the
  package's ``__init__`` before any module of it, and the registry is defined before the
  package imports its entries;
* function-level imports in ``polyemo/__init__.py`` (``polyemo.load`` re-exports lazily).

Rules: (a) no import cycles between modules; (b) no module imports a later stage. The stage
order is the data flow of issue 9 (corpora -> manifest -> labels -> splits -> audio ->
encoders -> cache -> heads/losses -> train -> experiment -> bundle -> predict -> serve ->
cli) with one difference, in the data stages: ``audio`` (decoding, content hashes),
``manifest`` (the table schema) and ``labels`` (label vocabularies) are what the corpus
recipes write their manifests with, so those three modules come before ``corpora`` in the
imports. ``experiment.export`` (a finished run -> a bundle) belongs to the bundle stage.
Shared helpers (``registry``, ``io``, ``paths``, ``numbers``, ``progress``, ``metrics``,
``report``) are stage 0; ``cli`` may import anything.
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

#: stage index -> module prefixes (a module belongs to the stage of its longest matching prefix)
STAGES: list[tuple[str, ...]] = [
    ("polyemo", "polyemo.registry", "polyemo.io", "polyemo.paths", "polyemo.numbers", "polyemo.progress",
     "polyemo.metrics", "polyemo.report"),
    ("polyemo.audio", "polyemo.segment", "polyemo.augment"),
    ("polyemo.manifest",),
    ("polyemo.labels", "polyemo.stats"),
    ("polyemo.corpora",),
    ("polyemo.splits",),
    ("polyemo.encoders",),
    ("polyemo.cache",),
    ("polyemo.heads", "polyemo.losses"),
    ("polyemo.train",),
    ("polyemo.experiment",),
    ("polyemo.bundle", "polyemo.experiment.export"),
    ("polyemo.predict",),
    ("polyemo.serve",),
    ("polyemo.cli", "polyemo.__main__"),
]
CLI_STAGE = len(STAGES) - 1


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@lru_cache(maxsize=1)
def _sources() -> dict[str, tuple[Path, ast.Module]]:
    return {_module_name(p): (p, ast.parse(p.read_text(encoding="utf-8"), str(p)))
            for p in sorted((SRC / "polyemo").rglob("*.py"))}


def _is_package(module: str) -> bool:
    return _sources()[module][0].name == "__init__.py"


def _absolute(module: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if _is_package(module) else module.split(".")[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _known(name: str) -> str:
    """The module ``name`` is, or the nearest package above it."""
    sources = _sources()
    while name and name not in sources:
        name = name.rpartition(".")[0]
    return name


@lru_cache(maxsize=1)
def _reexports() -> dict[str, dict[str, tuple[str, str | None]]]:
    """Per package: name -> (module, its name there) that its ``__init__`` imports at module
    level; (module, None) when the name is a module itself."""
    out: dict[str, dict[str, tuple[str, str | None]]] = {}
    for module, (_, tree) in _sources().items():
        if not _is_package(module):
            continue
        names: dict[str, tuple[str, str | None]] = {}
        for node in tree.body:
            if isinstance(node, ast.ImportFrom):
                source = _absolute(module, node)
                for alias in node.names:
                    submodule = f"{source}.{alias.name}"
                    names[alias.asname or alias.name] = ((submodule, None) if submodule in _sources()
                                                         else (_known(source), alias.name))
        out[module] = names
    return out


def _target(source: str, name: str) -> str:
    """The module that ``from source import name`` depends on (re-exports followed)."""
    for _ in range(50):
        if f"{source}.{name}" in _sources():
            return f"{source}.{name}"
        entry = _reexports().get(source, {}).get(name)
        if entry is None:
            return _known(source)
        origin, original = entry
        if original is None:
            return origin
        if origin == source:
            return _known(source)
        source, name = origin, original
    return _known(source)


def _function_level(tree: ast.Module) -> set[int]:
    """ids of import nodes inside functions."""
    inner: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inner.update(id(n) for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom)))
    return inner


@lru_cache(maxsize=1)
def import_graph() -> dict[str, dict[str, int]]:
    """module -> {imported module: first line}."""
    graph: dict[str, dict[str, int]] = {}
    for module, (_, tree) in _sources().items():
        lazy = _function_level(tree) if module == "polyemo" else set()
        edges: dict[str, int] = {}
        for node in ast.walk(tree):
            if id(node) in lazy:
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [_known(a.name) for a in node.names if a.name.split(".")[0] == "polyemo"]
            elif isinstance(node, ast.ImportFrom):
                source = _absolute(module, node)
                if source.split(".")[0] == "polyemo":
                    targets = [_target(source, a.name) for a in node.names]
            for target in targets:
                if not target or target == module:
                    continue
                if module.startswith(target + ".") and target != "polyemo":
                    continue  # a name its own ancestor package defines (its registry)
                edges.setdefault(target, node.lineno)
        graph[module] = edges
    return graph


def import_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _describe(cycle: list[str], graph: dict[str, dict[str, int]]) -> str:
    members = set(cycle)
    ties = [f"    {a} -> {b} (line {graph[a][b]})" for a in cycle for b in sorted(graph[a]) if b in members]
    return "cycle of " + ", ".join(cycle) + ":\n" + "\n".join(ties)


def stage_of(module: str) -> int | None:
    best: tuple[int, int] | None = None
    for stage, prefixes in enumerate(STAGES):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[1]):
                best = (stage, len(prefix))
    return None if best is None else best[0]


def test_the_graph_is_read():
    graph = import_graph()
    assert "polyemo.predict.engine" in graph["polyemo.predict"]  # re-export of load_model
    assert "polyemo.train.estimator" in graph["polyemo.train.trainer"]
    assert "polyemo.heads" not in graph["polyemo.heads.linear"]  # HEADS: its own package's registry
    assert "polyemo.predict" not in graph["polyemo"]  # polyemo.load imports lazily
    assert import_cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    graph = import_graph()
    cycles = import_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(_describe(c, graph) for c in cycles)


def test_every_module_has_a_stage():
    unmapped = [m for m in _sources() if stage_of(m) is None]
    assert not unmapped, f"add these modules to a stage in tests/test_architecture.py STAGES: {unmapped}"


def test_no_module_imports_a_later_stage():
    graph = import_graph()
    later = []
    for module, edges in sorted(graph.items()):
        stage = stage_of(module)
        if stage is None or stage == CLI_STAGE:
            continue
        for target, line in sorted(edges.items()):
            target_stage = stage_of(target)
            if target_stage is not None and target_stage > stage:
                later.append(f"{module} (stage {stage}) imports {target} (stage {target_stage}) at line {line}")
    assert not later, "imports of a later stage:\n" + "\n".join(later)
