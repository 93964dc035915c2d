"""Layout of prediction (issue 9): inputs -> engine -> outputs/plots, one job per module.

Read from the source (``ast``; imports inside functions and ``TYPE_CHECKING`` blocks count):
prediction and serving never import the experiment stage (nothing of a training run is
needed to predict), the server imports the engine instead of holding a copy of it, and the
predict modules import each other one way (no cycles; no submodule imports the package).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGES = ("polyemo.predict", "polyemo.serve")


def _name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules(package: str) -> dict[str, Path]:
    return {_name(p): p for p in sorted((SRC / package.replace(".", "/")).rglob("*.py"))}


def _imports(module: str, path: Path) -> dict[str, int]:
    """Absolute module names imported anywhere in the file -> first line."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: dict[str, int] = {}
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            names = [base]
        for name in names:
            found.setdefault(name, node.lineno)
    return found


def _all() -> dict[str, Path]:
    return {m: p for package in PACKAGES for m, p in _modules(package).items()}


def test_prediction_and_serving_never_import_the_experiment_stage():
    bad = [f"{m} imports {name} (line {line})" for m, p in _all().items()
           for name, line in _imports(m, p).items()
           if name == "polyemo.experiment" or name.startswith(("polyemo.experiment.", "polyemo.cli"))]
    assert not bad, "\n".join(bad)


def test_the_server_calls_the_engine_not_a_copy():
    modules = _modules("polyemo.serve")
    imported = {name for m, p in modules.items() for name in _imports(m, p)}
    assert imported & {"polyemo.predict", "polyemo.predict.engine"}, "polyemo.serve must import the engine"
    # The engine's ingredients (encoder, head, normaliser, VAD, torch) are the engine's alone.
    ingredients = ("torch", "polyemo.encoders", "polyemo.heads", "polyemo.train", "polyemo.segment", "polyemo.bundle",
                   "polyemo.predict.normalise", "polyemo.predict.units")
    copies = sorted(name for name in imported if name in ingredients or name.startswith(tuple(i + "." for i in ingredients)))
    assert not copies, f"polyemo.serve imports what the engine does: {copies}"
    engine_names = {"Recogniser", "load_model", "GroupNormaliser", "split_units", "assemble", "speech_segments"}
    defined = {node.name for p in modules.values() for node in ast.walk(ast.parse(p.read_text(encoding="utf-8")))
               if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))}
    assert not defined & engine_names


def test_predict_modules_import_each_other_one_way():
    modules = _modules("polyemo.predict")
    graph = {m: {name for name in _imports(m, p) if name in modules and name != m} for m, p in modules.items()}
    # Submodules never import the package (its __init__ imports them all: that would be a cycle).
    assert not [m for m, edges in graph.items() if m != "polyemo.predict" and "polyemo.predict" in edges]
    done: set[str] = set()
    order: list[str] = []
    while len(done) < len(graph):
        ready = sorted(m for m in graph if m not in done and graph[m] <= done)
        assert ready, f"import cycle among {sorted(set(graph) - done)}"
        done.update(ready)
        order += ready
    assert order[-1] == "polyemo.predict"


def test_each_predict_module_is_small():
    long = {m: n for m, p in _modules("polyemo.predict").items() if (n := len(p.read_text().splitlines())) > 300}
    assert not long, f"split these: {long}"


def test_importing_prediction_and_the_cli_stays_light():
    """Plots, the server, classical heads and openSMILE load only when used (torch on load)."""
    heavy = ("torch", "sklearn", "matplotlib", "fastapi", "opensmile")
    code = ("import sys, polyemo.predict, polyemo.cli; "
            f"print([m for m in {heavy!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_predicting_with_the_default_model_imports_no_training_libraries():
    """A prediction with a torch head needs neither scikit-learn nor matplotlib, fastapi or openSMILE,
    and (for a cold start measured in seconds) not transformers, huggingface_hub or pandas either."""
    unused = ("sklearn", "matplotlib", "fastapi", "opensmile", "transformers", "huggingface_hub", "pandas", "torch._dynamo")
    code = ("import sys, polyemo; r = polyemo.load(); p = r.predict(['examples/hello.wav'])[0]; assert p.ok; "
            f"print(sorted(m for m in {unused!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr
