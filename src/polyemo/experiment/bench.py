"""A benchmark: a grid of experiments from one YAML file, a leaderboard and heatmaps.

Grid file::

    name: emobox
    base:                     # experiment fields shared by every cell
      encoder: {name: whisper-base}
      head: linear
      protocol: emobox
    axes:                     # the cartesian product of these makes the cells
      corpora: [emodb, ravdess, savee]
      head: [linear, logreg]
      normalisation: [none, speaker]
    parts:                    # optional: sub-grids, each with its own settings and axes
      - name: in-domain
        axes: {corpora: [emodb, ravdess]}
      - name: cross-corpus
        set: {protocol: cross_corpus, corpora: [emodb, ravdess]}
    primary: ua

An axis is named after an experiment field (``corpora``, ``encoder``, ``head``,
``protocol``, ``loss``, ``normalisation``, ``labels``, ``features``, dotted names such as
``encoder.layers``); each value replaces that field (a mapping merges into a mapping). A
value ``{id: baved, set: {corpora: [baved], target: arousal_level}}`` sets several fields at
once under the name ``id``. Top-level ``axes`` apply to every part.

:func:`run_bench` runs every cell with :func:`~polyemo.experiment.run.run_experiment` into
``<out>/cells/<cell id>/`` (features come from the shared cache), skips cells that have
finished (their ``result.json``), records a failing cell and goes on, and rewrites
``leaderboard.csv`` / ``leaderboard.md`` (sorted by the primary metric, mean over folds)
after every cell; every score there has its 95 % interval and the classes scored, and
each cell is compared with the best one by a paired bootstrap on the same test utterances.
The ranking is on test data and says so: it chooses nothing. Cross-corpus cells add
``cross_corpus*.png`` heatmaps (train corpus x test corpus, UA), with in-domain cells of the
same setup on the diagonal, every cell pooled over its own test predictions.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from polyemo.experiment.config import ConfigError
from polyemo.experiment.grid import DATA_AXES, NAMED_AXES, BenchConfig, Cell, GridPart, axis_value, expand_grid, load_bench
from polyemo.experiment.leaderboard import (
    RANKING_NOTE,
    cell_predictions,
    cross_corpus_heatmaps,
    leaderboard_markdown,
    leaderboard_rows,
)
from polyemo.experiment.results import RUN_FILE, RunResult
from polyemo.experiment.run import run_experiment
from polyemo.io import write_json, write_table, write_text
from polyemo.progress import progress_bar

# The grid and the leaderboard have modules of their own; their names are still read from here.
__all__ = ["DATA_AXES", "NAMED_AXES", "RANKING_NOTE", "BenchConfig", "BenchResult", "Cell", "GridPart", "axis_value",
           "cell_predictions", "cross_corpus_heatmaps", "expand_grid", "leaderboard_markdown", "leaderboard_rows",
           "load_bench", "run_bench"]


@dataclass
class BenchResult:
    name: str
    out_dir: Path
    leaderboard: pd.DataFrame
    results: dict[str, RunResult] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    heatmaps: list[Path] = field(default_factory=list)


# --- running ---------------------------------------------------------------------------------------

def _finished(cell: Cell, cell_dir: Path) -> RunResult | None:
    path = cell_dir / RUN_FILE
    if not path.exists():
        return None
    try:
        result = RunResult.load(path)
    except (OSError, ValueError):
        return None
    return result if result.fingerprint == cell.config.fingerprint() else None


def _run_cell(config: Any, cell_dir: str) -> None:
    """One cell in a Ray worker; the driver reads the result from the cell folder."""
    run_experiment(config, Path(cell_dir), progress=False)


def run_bench(
    grid: str | Path | dict[str, Any] | BenchConfig,
    out_dir: str | Path | None = None,
    *,
    overrides: dict[str, Any] | None = None,
    progress: bool = True,
    fail_fast: bool = False,
    only: list[str] | None = None,
    ray: str | None = None,
) -> BenchResult:
    """Run every cell of ``grid`` (skipping finished ones), then write the leaderboard.

    ``overrides`` (dotted keys, each replacing that field) apply to every cell, e.g. ``{"limit": 20, "training.epochs": 1}``.
    A failing cell is recorded (``cells/<id>/error.txt`` and the leaderboard's ``status``)
    and the others still run, unless ``fail_fast``. ``only``: run just these cell ids.
    Default ``out_dir``: ``runs/<grid name>``. With ``ray`` (an address, or ``local``; see
    :mod:`polyemo.distributed`) the cells still to run are Ray tasks, each writing its own cell
    folder, which must be on a path every node sees (as must the corpora and the feature cache).
    """
    bench, cells = load_bench(grid, overrides)
    out = Path(out_dir) if out_dir is not None else Path("runs") / bench.name
    out.mkdir(parents=True, exist_ok=True)
    primary = bench.primary or cells[0].config.metrics.primary
    write_text(out / "bench.yaml", yaml.safe_dump(bench.model_dump(mode="json"), sort_keys=False, allow_unicode=True))
    write_json(out / "cells.json", [{"id": c.id, "part": c.part, "axes": c.axes, "fingerprint": c.config.fingerprint(),
                                     "config": c.config.resolved()} for c in cells])
    if only:
        unknown = sorted(set(only) - {c.id for c in cells})
        if unknown:
            raise ConfigError(f"unknown cells {unknown}; cells: {[c.id for c in cells]}")
    results: dict[str, RunResult] = {}
    errors: dict[str, str] = {}
    predictions: dict[str, pd.DataFrame] = {}
    pair_cache: dict[tuple[str, str], dict[str, Any]] = {}  # a pair's bootstrap never changes
    started = time.perf_counter()

    def publish() -> pd.DataFrame:
        for cell in cells:
            if cell.id in results and cell.id not in predictions:
                frame = cell_predictions(out, cell, results[cell.id])
                if frame is not None:
                    predictions[cell.id] = frame
        board = leaderboard_rows(cells, results, errors, primary, predictions, pair_cache)
        write_table(out / "leaderboard.csv", board)
        write_text(out / "leaderboard.md", leaderboard_markdown(board, primary, f"{bench.name} leaderboard"))
        return board

    with progress_bar("{task.fields[status]}", enabled=progress) as bar:
        task = bar.add_task(f"{bench.name} cells", total=len(cells), status="")
        remote: list[Cell] = []
        for cell in cells:
            cell_dir = out / "cells" / cell.id
            done = _finished(cell, cell_dir)
            if done is not None:
                results[cell.id] = done
                bar.update(task, advance=1, status=f"{cell.id}: done before")
                continue
            if only and cell.id not in only:
                bar.update(task, advance=1, status=f"{cell.id}: skipped")
                continue
            if ray is not None:
                remote.append(cell)
                continue
            bar.update(task, status=cell.id)
            try:
                results[cell.id] = run_experiment(cell.config, cell_dir, progress=progress)
                (cell_dir / "error.txt").unlink(missing_ok=True)
            except Exception as error:  # one bad cell never stops the grid
                if fail_fast:
                    raise
                errors[cell.id] = f"{type(error).__name__}: {error}"
                write_text(cell_dir / "error.txt", errors[cell.id] + "\n\n" + traceback.format_exc())
            publish()
            bar.update(task, advance=1)
        if remote:
            from polyemo.distributed import run_tasks

            arguments = [(cell.config, str((out / "cells" / cell.id).resolve())) for cell in remote]
            for index, _, error in run_tasks(ray, _run_cell, arguments):
                cell = remote[index]
                cell_dir = out / "cells" / cell.id
                if error is None:
                    results[cell.id] = RunResult.load(cell_dir / RUN_FILE)
                    (cell_dir / "error.txt").unlink(missing_ok=True)
                else:
                    if fail_fast:
                        raise error
                    errors[cell.id] = f"{type(error).__name__}: {str(error).strip().splitlines()[-1] if str(error).strip() else error}"
                    write_text(cell_dir / "error.txt", errors[cell.id] + "\n\n" + str(error))
                publish()
                bar.update(task, advance=1, status=f"{cell.id} (ray)")
    board = publish()
    heatmaps = cross_corpus_heatmaps(cells, results, out, predictions)
    write_json(out / "bench.json", {
        "name": bench.name, "primary": primary, "cells": len(cells), "finished": len(results),
        "errors": errors, "heatmaps": [p.name for p in heatmaps],
        "seconds": round(time.perf_counter() - started, 3),
    })
    return BenchResult(bench.name, out, board, results, errors, heatmaps)
