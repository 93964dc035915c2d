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

import copy
import hashlib
import itertools
import json
import math
import re
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from polyemo.experiment.config import (
    ConfigError,
    ExperimentConfig,
    deep_merge,
    experiment_from_dict,
    format_validation_error,
    read_yaml,
    set_path,
)
from polyemo.experiment.report import md_table, plot_cross_corpus
from polyemo.experiment.results import RUN_FILE, RunResult
from polyemo.experiment.run import run_experiment
from polyemo.io import write_json, write_table, write_text
from polyemo.progress import progress_bar

#: axes whose string values are names (their id is the value itself)
NAMED_AXES = {"corpora", "encoder", "head", "protocol", "loss", "labels", "features", "target"}
#: axes that say WHERE a model is trained/tested, not WHAT the model is (heatmap grouping)
DATA_AXES = {"corpora", "protocol"}


class GridPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    set: dict[str, Any] = Field(default_factory=dict)
    axes: dict[str, list[Any]] = Field(default_factory=dict)


class BenchConfig(BaseModel):
    """A grid of experiments: ``base`` settings, ``axes`` and optional ``parts``."""

    model_config = ConfigDict(extra="forbid")

    name: str = "bench"
    base: dict[str, Any] = Field(default_factory=dict)
    axes: dict[str, list[Any]] = Field(default_factory=dict)
    parts: list[GridPart] = Field(default_factory=list)
    primary: Literal["ua", "wa", "macro_f1"] | None = None


@dataclass
class Cell:
    """One experiment of the grid."""

    id: str
    part: str | None
    axes: dict[str, str]  # axis -> value id
    config: ExperimentConfig


@dataclass
class BenchResult:
    name: str
    out_dir: Path
    leaderboard: pd.DataFrame
    results: dict[str, RunResult] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    heatmaps: list[Path] = field(default_factory=list)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+=-]+", "_", str(text)).strip("_") or "x"


def axis_value(axis: str, value: Any) -> tuple[str, dict[str, Any]]:
    """(id, overrides) of one axis value."""
    if isinstance(value, dict) and "set" in value:
        extra = sorted(set(value) - {"id", "set"})
        if "id" not in value or extra or not isinstance(value["set"], dict):
            raise ValueError(f"axis {axis!r}: a variant with 'set' needs exactly 'id' and a mapping 'set', got {sorted(value)}")
        return str(value["id"]), copy.deepcopy(value["set"])
    update: dict[str, Any] = {}
    set_path(update, axis, copy.deepcopy(value))
    leaf = axis.split(".")[-1]
    if isinstance(value, dict):
        ident = str(value.get("name", value.get("id", json.dumps(value, sort_keys=True))))
    elif isinstance(value, list):
        ident = "+".join(str(v if not isinstance(v, dict) else v.get("name", v.get("manifest", "?"))) for v in value)
    elif isinstance(value, str) and axis in NAMED_AXES:
        ident = value
    else:
        ident = f"{leaf}={value}"
    return ident, update


def expand_grid(bench: BenchConfig, source: str = "grid", base_dir: Path | None = None,
                overrides: dict[str, Any] | None = None) -> list[Cell]:
    """Every cell of the grid, validated (errors name the file and the cell)."""
    parts = bench.parts or [GridPart()]
    cells: list[Cell] = []
    seen: dict[str, int] = {}
    for part in parts:
        axes = {**bench.axes, **part.axes}
        for axis, values in axes.items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"{source}: axis {axis!r}{' of part ' + part.name if part.name else ''} needs a non-empty list of values")
        choices = [[(axis, v) for v in values] for axis, values in axes.items()]
        for combo in itertools.product(*choices) if choices else [()]:
            data = deep_merge(bench.base, part.set)
            ids = [part.name] if part.name else []
            axis_ids: dict[str, str] = {}
            for axis, value in combo:
                try:
                    ident, update = axis_value(axis, value)
                except ValueError as error:
                    raise ConfigError(f"{source}: {error}") from None
                data = deep_merge(data, update)
                ids.append(ident)
                axis_ids[axis] = ident
            for key, value in (overrides or {}).items():
                set_path(data, key, copy.deepcopy(value))  # replaces, as for a single experiment
            cell_id = "__".join(_slug(i) for i in ids) or "default"
            if cell_id in seen:
                seen[cell_id] += 1
                cell_id = f"{cell_id}-{seen[cell_id]}"
            else:
                seen[cell_id] = 1
            data["name"] = f"{bench.name}.{cell_id}"
            try:
                config = experiment_from_dict(data, f"{source} [cell {cell_id}]", base_dir)
            except ConfigError as error:
                raise ConfigError(str(error)) from None
            cells.append(Cell(cell_id, part.name, axis_ids, config))
    return cells


def load_bench(source: str | Path | dict[str, Any] | BenchConfig,
               overrides: dict[str, Any] | None = None) -> tuple[BenchConfig, list[Cell]]:
    """The grid and its validated cells from a YAML path, a mapping or a config."""
    if isinstance(source, BenchConfig):
        bench, name, base_dir = source, "grid", None
    else:
        if isinstance(source, dict):
            data, name, base_dir = copy.deepcopy(source), "grid", None
        else:
            path = Path(source)
            data, name, base_dir = read_yaml(path), str(path), path.resolve().parent
            data.setdefault("name", path.stem)
        try:
            bench = BenchConfig(**data)
        except ValidationError as error:
            raise ConfigError(format_validation_error(error, name)) from None
    return bench, expand_grid(bench, name, base_dir, overrides)


# --- leaderboard and heatmaps ---------------------------------------------------------------------

#: what a leaderboard ranks on, in its title: every cell is scored on its own test folds
RANKING_NOTE = "ranked on test; not used to choose any setting"


def cell_predictions(out_dir: Path, cell: Cell, result: RunResult | None) -> pd.DataFrame | None:
    """The test predictions of a finished cell (its ``predictions.csv``), or None."""
    from polyemo.io import read_table

    for folder in (out_dir / "cells" / cell.id, Path(result.out_dir) if result is not None else None):
        if folder is not None and (folder / "predictions.csv").is_file():
            frame = read_table(folder / "predictions.csv")
            return frame.astype({c: str for c in ("utt_id", "corpus", "speaker", "fold", "true", "pred") if c in frame})
    return None


def _scored_classes(result: RunResult) -> list[str]:
    return list(result.scored_classes or result.classes)


def leaderboard_rows(cells: list[Cell], results: dict[str, RunResult], errors: dict[str, str],
                     primary: str, predictions: dict[str, pd.DataFrame] | None = None,
                     pair_cache: dict[tuple[str, str], dict[str, Any]] | None = None) -> pd.DataFrame:
    """One row per cell, sorted by the mean of folds of ``primary``, each score with its interval;
    with ``predictions`` (cell id -> its test predictions) every cell is also compared with the
    best one by a paired bootstrap on the same test utterances (``{primary}_diff*``, ``paired``)."""
    from polyemo.experiment.scoring import class_text, paired_against

    axes = list(dict.fromkeys(a for c in cells for a in c.axes))
    rows = []
    for cell in cells:
        row: dict[str, Any] = {"cell": cell.id}
        if any(c.part for c in cells):
            row["part"] = cell.part or ""
        row.update({axis: cell.axes.get(axis, "") for axis in axes})
        result = results.get(cell.id)
        if result is not None:
            mean_ci = result.mean_of_folds_ci.get(primary, [math.nan, math.nan])
            ci = result.pooled_ci.get(primary, [math.nan, math.nan])
            row.update({
                "status": "ok", "n_folds": result.n_folds, "n_utterances": result.n_utterances,
                "classes": class_text(_scored_classes(result)),
                f"{primary}_mean": result.mean_of_folds.get(primary, math.nan),
                f"{primary}_mean_low": mean_ci[0], f"{primary}_mean_high": mean_ci[1],
                f"{primary}_std": result.primary_std if result.primary_metric == primary else math.nan,
                f"{primary}_pooled": result.pooled.get(primary, math.nan),
                f"{primary}_pooled_low": ci[0], f"{primary}_pooled_high": ci[1],
                **{f"{m}_pooled": result.pooled.get(m, math.nan) for m in ("ua", "wa", "macro_f1") if m != primary},
                "seconds": result.seconds.get("total", math.nan),
            })
        else:
            row["status"] = "error: " + errors[cell.id].splitlines()[0][:200] if cell.id in errors else "pending"
        rows.append(row)
    frame = pd.DataFrame(rows)
    key = f"{primary}_mean"
    if key in frame.columns:
        frame = frame.sort_values(key, ascending=False, na_position="last", kind="stable").reset_index(drop=True)
        ok = frame[frame["status"] == "ok"]
        if predictions is not None and len(ok):
            by_id = {c.id: c for c in cells}
            best = str(ok.iloc[0]["cell"])
            metrics = by_id[best].config.metrics
            paired: dict[str, dict[str, Any]] = {}
            for cell_id in ok["cell"].astype(str):
                if best not in predictions or cell_id not in predictions:
                    paired[cell_id] = {"paired": "not paired (no predictions)"}
                    continue
                cache_key = (best, cell_id)
                if pair_cache is not None and cache_key in pair_cache:
                    paired[cell_id] = pair_cache[cache_key]
                    continue
                classes = list(dict.fromkeys(results[best].classes + results[cell_id].classes))
                outcome = paired_against(predictions[best], predictions[cell_id], classes, primary,
                                         by_speaker=metrics.bootstrap_unit == "speaker", n_boot=max(metrics.n_boot, 1),
                                         alpha=metrics.alpha, seed=by_id[best].config.seed)
                if cell_id == best:
                    outcome = {**outcome, "paired": "best (reference)"}
                paired[cell_id] = outcome
                if pair_cache is not None:
                    pair_cache[cache_key] = outcome
            frame[f"{primary}_diff_vs_best"] = frame["cell"].map(lambda c: paired.get(c, {}).get("diff", math.nan))
            frame[f"{primary}_diff_low"] = frame["cell"].map(lambda c: paired.get(c, {}).get("diff_low", math.nan))
            frame[f"{primary}_diff_high"] = frame["cell"].map(lambda c: paired.get(c, {}).get("diff_high", math.nan))
            frame["paired"] = frame["cell"].map(lambda c: paired.get(c, {}).get("paired", ""))
            frame.attrs["paired_interval"] = next((p["interval"] for p in paired.values() if p.get("interval")), "")
            frame.attrs["best"] = best
    frame.insert(0, "rank", range(1, len(frame) + 1))
    return frame


def leaderboard_markdown(frame: pd.DataFrame, primary: str, title: str) -> str:
    shown = frame.copy()
    for column in shown.columns:
        if column.endswith(("_mean", "_std", "_pooled", "_low", "_high", "_vs_best")):
            shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else f"{100 * v:.2f}")
        elif column == "seconds":
            shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else f"{v:.1f}")
        elif column in ("n_folds", "n_utterances"):
            shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else str(int(v)))
    lines = [f"# {title} ({RANKING_NOTE})", "",
             f"Every cell is scored on its own test folds, and ranked on **{primary}**, the mean over folds "
             f"(`{primary}_mean`, %, with its 95 % interval `_mean_low` .. `_mean_high` from a bootstrap within "
             f"folds). `_pooled`: all folds' predictions scored together (interval: speaker-cluster bootstrap "
             f"within each test corpus). `classes`: the classes scored, with their count. The ranking is on "
             f"test data and is not used to choose any setting; settings are chosen on validation speakers "
             f"inside each fold."]
    if "paired" in frame.columns:
        how = frame.attrs.get("paired_interval", "")
        lines += ["", f"`{primary}_diff_vs_best` (points, %): this cell's {primary} mean of folds minus the best "
                  f"cell's (`{frame.attrs.get('best', '')}`), with the interval `_diff_low` .. `_diff_high` of a "
                  f"paired bootstrap: the same test utterances, the same resamples for both cells"
                  + (f" ({how})" if how else "") + ". `paired` says whether the interval excludes 0; only cells "
                  "scored on the same test utterances in the same folds are paired."]
    lines += ["", md_table(shown), ""]
    return "\n".join(lines)


def _model_key(cell: Cell) -> str:
    """What the cell's model is, apart from where it is trained and tested."""
    data = cell.config.resolved()
    for key in ("name", "corpora", "corpora_root", "protocol", "limit", "final_model"):
        data.pop(key, None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def cross_corpus_heatmaps(cells: list[Cell], results: dict[str, RunResult], out_dir: Path,
                          predictions: dict[str, pd.DataFrame] | None = None) -> list[Path]:
    """One heatmap per setup that has cross-corpus folds, in-domain cells on the diagonal.

    Every cell -- diagonal and off-diagonal alike -- is the pooled UA over that cell's own test
    predictions (in-domain: all folds of the single-corpus run; cross-corpus: the fold(s) of
    that train -> test pair), with its speaker-cluster bootstrap interval
    (:mod:`polyemo.experiment.scoring`); ``cross_corpus*_cells.csv`` holds the intervals."""
    from polyemo.experiment.scoring import CROSS_CORPUS_METHOD, cells_table, cross_corpus_cells, in_domain_cell

    groups: dict[str, dict[str, Any]] = {}
    for cell in cells:
        result = results.get(cell.id)
        if result is None:
            continue
        frame = (predictions or {}).get(cell.id)
        if frame is None:
            frame = cell_predictions(out_dir, cell, result)
        if frame is None:
            continue
        metrics = cell.config.metrics
        options = {"by_speaker": metrics.bootstrap_unit == "speaker", "n_boot": metrics.n_boot,
                   "alpha": metrics.alpha, "seed": cell.config.seed}
        key = _model_key(cell)
        group = groups.setdefault(key, {"pairs": {}, "diagonal": {}, "cells": []})
        cross = {f.name: f.info for f in result.folds if "train_corpora" in f.info and "test_corpus" in f.info}
        if cross:
            group["cells"].append(cell)
            for row in cross_corpus_cells(frame, cross, result.classes, source=cell.id, **options).to_dict("records"):
                group["pairs"][(row["train"], row["test"])] = row
        elif len(cell.config.corpora) == 1:
            corpus = cell.config.corpora[0].label
            group["diagonal"][corpus] = in_domain_cell(frame, corpus, result.classes, source=cell.id, **options)
    groups = {k: g for k, g in groups.items() if g["pairs"]}
    paths = []
    for index, (_, group) in enumerate(sorted(groups.items(), key=lambda kv: kv[1]["cells"][0].id)):
        pairs = group["pairs"]
        tested = {test for _, test in pairs}
        rows = list(pairs.values()) + [row for corpus, row in sorted(group["diagonal"].items())
                                       if corpus in tested]
        long = pd.DataFrame(rows)
        table = cells_table(long, "ua")
        suffix = "" if len(groups) == 1 else f"_{index + 1}"
        first = group["cells"][0]
        what = ", ".join(f"{a}={v}" for a, v in first.axes.items() if a not in DATA_AXES) or first.config.encoder.name
        interval = next((r["interval"] for r in rows if r.get("interval")), "")
        title = (f"Cross-corpus UA (%): {first.config.encoder.name} / {first.config.head.name}" + (f" ({what})" if suffix else "")
                 + f"\n{CROSS_CORPUS_METHOD}" + (f"\nbrackets: {interval}" if interval else ""))
        png = out_dir / f"cross_corpus{suffix}.png"
        write_table(out_dir / f"cross_corpus{suffix}.csv", table.reset_index())
        write_table(out_dir / f"cross_corpus{suffix}_cells.csv", long)
        plot_cross_corpus(table, png, title=title, low=cells_table(long, "ua_low"), high=cells_table(long, "ua_high"))
        paths.append(png)
    return paths


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


def run_bench(
    grid: str | Path | dict[str, Any] | BenchConfig,
    out_dir: str | Path | None = None,
    *,
    overrides: dict[str, Any] | None = None,
    progress: bool = True,
    fail_fast: bool = False,
    only: list[str] | None = None,
) -> BenchResult:
    """Run every cell of ``grid`` (skipping finished ones), then write the leaderboard.

    ``overrides`` (dotted keys, each replacing that field) apply to every cell, e.g. ``{"limit": 20, "training.epochs": 1}``.
    A failing cell is recorded (``cells/<id>/error.txt`` and the leaderboard's ``status``)
    and the others still run, unless ``fail_fast``. ``only``: run just these cell ids.
    Default ``out_dir``: ``runs/<grid name>``.
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
    board = publish()
    heatmaps = cross_corpus_heatmaps(cells, results, out, predictions)
    write_json(out / "bench.json", {
        "name": bench.name, "primary": primary, "cells": len(cells), "finished": len(results),
        "errors": errors, "heatmaps": [p.name for p in heatmaps],
        "seconds": round(time.perf_counter() - started, 3),
    })
    return BenchResult(bench.name, out, board, results, errors, heatmaps)
