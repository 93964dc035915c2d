"""A benchmark's leaderboard and cross-corpus heatmaps, from its finished cells.

Every score has its 95 % interval and the classes scored; every cell is compared with the
best one by a paired bootstrap on the same test utterances (:mod:`polyemo.experiment.scoring`).
The ranking is on test data and says so: it chooses nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from polyemo.experiment.grid import DATA_AXES, Cell
from polyemo.experiment.report import md_table, plot_cross_corpus
from polyemo.experiment.results import RunResult
from polyemo.experiment.scoring import (
    CROSS_CORPUS_METHOD,
    cells_table,
    class_text,
    cross_corpus_cells,
    in_domain_cell,
    paired_against,
)
from polyemo.io import read_table, write_table

#: what a leaderboard ranks on, in its title: every cell is scored on its own test folds
RANKING_NOTE = "ranked on test; not used to choose any setting"


def cell_predictions(out_dir: Path, cell: Cell, result: RunResult | None) -> pd.DataFrame | None:
    """The test predictions of a finished cell (its ``predictions.csv``), or None."""
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
        dimensional = primary == "mean_ccc" or primary.startswith("ccc_")
        if predictions is not None and len(ok) and not dimensional:  # paired bootstrap of classification scores
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
    dimensional = primary == "mean_ccc" or primary.startswith("ccc_")  # CCC in [-1, 1], not a percentage
    for column in shown.columns:
        if dimensional and column.startswith(primary) and column.endswith(("_mean", "_std", "_pooled", "_low", "_high")):
            shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else f"{v:.3f}")
        elif column.endswith(("_mean", "_std", "_pooled", "_low", "_high", "_vs_best")):
            shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else f"{100 * v:.2f}")
        elif column == "seconds":
            shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else f"{v:.1f}")
        elif column in ("n_folds", "n_utterances"):
            shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else str(int(v)))
    lines = [f"# {title} ({RANKING_NOTE})", "",
             f"Every cell is scored on its own test folds, and ranked on **{primary}**, the mean over folds "
             f"(`{primary}_mean`, {'a CCC' if dimensional else '%'}, with its 95 % interval `_mean_low` .. `_mean_high` from a bootstrap within "
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
