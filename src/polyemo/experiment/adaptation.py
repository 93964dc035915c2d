"""Test-time adapters in a run (issue 12): each fold's adapted scores beside its plain one.

With an ``adaptation:`` block (:class:`~polyemo.experiment.adaptation_spec.AdaptationRunSpec`):

* :func:`adapt_fold` (called by ``run_fold`` after the plain prediction of the fold's test
  rows): per adapter, its settings are chosen by the inner protocol over the fold's TRAINING
  rows (:func:`~polyemo.experiment.selection.choose_adaptation`: each inner fold's model adapts
  to its held-out training language), then applied once to the fold's unlabelled test batch
  (the scored rows). Writes ``folds/<fold>/predictions.adapt-<adapter>.csv`` (the plain
  predictions' columns) and returns what was chosen, for ``fold.json``.
* :func:`score_adaptations` (after the plain scores): every adapter scored like the plain
  predictions (mean of folds and pooled, with the same bootstrap intervals), into
  ``adaptation.json`` and ``adaptation.md``; the markdown is appended to ``report.md``.
* :func:`write_final_adaptation` (after the final model): what a bundle needs to adapt later
  (``final/adaptation.json`` + ``adaptation.npz``): the final model's source prior and the
  moments of its normalised training features over all its rows, and each adapter's settings
  chosen by the inner protocol over ALL the run's languages (never a held-out score). The
  adapter the bundle ships (the card's adapted score) is the one with the best inner score
  above the plain inner score (strength 0), if any. ``polyemo export`` puts it in the bundle.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from polyemo.experiment.config import ExperimentConfig
from polyemo.experiment.data import TARGET_COLUMN
from polyemo.experiment.inputs import InputProvider, fold_class_masks
from polyemo.io import atomic_path, read_table, write_json, write_table, write_text
from polyemo.numbers import finite, percent

ADAPTATION_FILE = "adaptation.json"
FINAL_STATE = "adaptation.npz"


def predictions_file(adapter: str) -> str:
    return f"predictions.adapt-{adapter}.csv"


def adapt_fold(config: ExperimentConfig, fitted, inputs: InputProvider, train_rows: pd.DataFrame,
               val_rows: pd.DataFrame, test_data, scored: np.ndarray, plain: np.ndarray, frame: pd.DataFrame,
               fold_classes: list[str], classes: list[str], fold_dir: Path) -> dict[str, Any]:
    """Adapt the fold's scored test predictions (``plain``: of the scored rows, ``frame``'s) with each adapter."""
    from polyemo.experiment.selection import choose_adaptation
    from polyemo.train.adaptation import make_adapter

    spec = config.adaptation
    assert spec is not None
    options = spec.options()
    records = {}
    if spec.by is not None:
        records = choose_adaptation(fitted.config, train_rows, val_rows, inputs, fold_classes, options, by=spec.by,
                                    params=spec.by_params, metric=config.metrics.primary)
    seen = pd.concat([train_rows, val_rows])
    fit_rows = fitted.prepare(inputs.split_data(seen, fold_classes, fold_class_masks(seen, fold_classes)),
                              inputs.layers)
    batch = test_data.subset(np.flatnonzero(scored))  # unlabelled: adapters never read batch.labels
    out: dict[str, Any] = {}
    for name in spec.adapters:
        record = records.get(name)
        settings = record.choice if record is not None else options[name][0]
        adapter = make_adapter(name, **settings).fit(fitted.estimator, fit_rows)
        probabilities = adapter.adapt(fitted.estimator, batch, np.asarray(plain, dtype=np.float64))
        adapted = frame.copy()
        adapted["pred"] = [fold_classes[i] for i in probabilities.argmax(1)]
        for j, cls in enumerate(classes):
            adapted[f"p_{cls}"] = probabilities[:, fold_classes.index(cls)] if cls in fold_classes else 0.0
        write_table(fold_dir / predictions_file(name), adapted)
        out[name] = {"settings": dict(settings), "described": adapter.describe(),
                     "selection": None if record is None else record.model_dump(mode="json")}
    return out


def score_adaptations(config: ExperimentConfig, out_dir: Path, fold_names: list[str], classes: list[str],
                      plain: dict[str, Any], fold_info: dict[str, dict[str, Any]]) -> str:
    """Score every adapter's predictions like the plain ones; write adaptation.json/.md; the markdown."""
    from polyemo.metrics import FoldPredictions, aggregate_folds

    spec = config.adaptation
    assert spec is not None
    primary, n_boot, alpha, seed = config.metrics.primary, config.metrics.n_boot, config.metrics.alpha, config.seed
    rows: dict[str, Any] = {"plain": plain}
    for name in spec.adapters:
        frames = {n: read_table(out_dir / "folds" / n / predictions_file(name)).astype({"true": str, "pred": str})
                  for n in fold_names}
        by_speaker = config.metrics.bootstrap_unit == "speaker"
        folds = [FoldPredictions(y_true=f["true"].tolist(), y_pred=f["pred"].tolist(), name=n,
                                 groups=f["speaker"].astype(str).tolist() if by_speaker else None,
                                 strata=f["corpus"].astype(str).tolist()) for n, f in frames.items()]
        aggregate = aggregate_folds(folds, labels=classes, task="classification", n_boot=n_boot, alpha=alpha,
                                    seed=seed, strata_name="test corpora")
        rows[name] = {
            "mean_of_folds": {k: finite(s.mean) for k, s in aggregate.mean_of_folds.items()},
            "mean_of_folds_ci": {k: [finite(s.ci.low), finite(s.ci.high)]
                                 for k, s in aggregate.mean_of_folds.items() if s.ci is not None},
            "pooled": {k: finite(v) for k, v in aggregate.pooled.summary().items()},
            "pooled_ci": {k: [finite(c.low), finite(c.high)] for k, c in aggregate.pooled.ci.items()},
            "folds": {n: finite(getattr(m, primary)) for n, m in zip(fold_names, aggregate.folds)},
            "settings": {n: (fold_info[n].get("adaptation") or {}).get(name, {}).get("settings") for n in fold_names},
        }
    write_json(out_dir / ADAPTATION_FILE, {"primary": primary, "choose_by": spec.by or "none", "scores": rows})
    text = adaptation_markdown(rows, fold_names, fold_info, primary, spec.by)
    write_text(out_dir / "adaptation.md", text)
    return text


def _cell(value, ci=None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{percent(value)}" + (f" [{percent(ci[0])}, {percent(ci[1])}]" if ci and None not in ci else "")


def adaptation_markdown(rows: dict[str, Any], fold_names: list[str], fold_info: dict[str, dict[str, Any]],
                        primary: str, by: str | None) -> str:
    """Plain first, then each adapter, per fold and mean of folds / pooled with intervals."""
    metric = {"macro_f1": "macro-F1", "ua": "UA", "wa": "WA"}.get(primary, primary)
    held = [str((fold_info[n].get("info") or {}).get("target", n)) for n in fold_names]
    how = (f"settings chosen in each fold by an inner `{by}` over its TRAINING rows only" if by
           else "default settings (strength 1.0), no inner choice")
    lines = ["## Test-time adaptation (unlabelled test batch)", "",
             f"{metric} %: the plain model (no target data at all) first, then each adapter applied to the fold's "
             f"unlabelled test batch ({how}). Intervals as for the plain score.", "",
             "| | " + " | ".join(held) + f" | mean of folds | pooled |", "|---|" + "---:|" * (len(held) + 2)]
    for name, row in rows.items():
        label = "plain (no adaptation)" if name == "plain" else f"+ {name}"
        cells = [_cell(row["folds"].get(n)) for n in fold_names]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {_cell(row['mean_of_folds'].get(primary), row['mean_of_folds_ci'].get(primary))}"
                     f" | {_cell(row['pooled'].get(primary), row['pooled_ci'].get(primary))} |")
    lowered = []
    for name, row in rows.items():
        if name == "plain":
            continue
        for n, h in zip(fold_names, held):
            a, p = row["folds"].get(n), rows["plain"]["folds"].get(n)
            if a is not None and p is not None and a < p - 0.02:
                lowered.append(f"{name} lowers {h} by {100 * (p - a):.1f} points")
    lines += ["", ("Lowered by more than 2 points: " + "; ".join(lowered) + ".") if lowered
              else "No adapter lowers any fold by more than 2 points."]
    chosen = []
    for name in rows:
        if name != "plain":
            settings = [json.dumps(rows[name]["settings"].get(n)) for n in fold_names]
            chosen.append(f"| {name} | " + " | ".join(settings) + " |")
    lines += ["", "Settings each fold's inner protocol chose:", "", "| adapter | " + " | ".join(held) + " |",
              "|---|" + "---|" * len(held), *chosen, ""]
    return "\n".join(lines)


def plain_scores(result) -> dict[str, Any]:
    """The plain run's scores in the rows' shape (from its RunResult)."""
    return {"mean_of_folds": dict(result.mean_of_folds), "mean_of_folds_ci": dict(result.mean_of_folds_ci),
            "pooled": dict(result.pooled), "pooled_ci": dict(result.pooled_ci),
            "folds": {f.name: getattr(f, result.primary_metric) for f in result.folds}}


# --- the final model ------------------------------------------------------------------------------

def _final_key(run_dir: Path) -> str:
    from polyemo.experiment.final import INFO_FILE, final_dir

    return hashlib.sha256((final_dir(run_dir) / INFO_FILE).read_bytes()).hexdigest()


def read_final_adaptation(run_dir: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
    """``final/adaptation.json`` and its arrays, when they belong to the current final model."""
    from polyemo.experiment.final import final_dir

    run_dir = Path(run_dir)
    path = final_dir(run_dir) / ADAPTATION_FILE
    if not path.is_file() or not (final_dir(run_dir) / FINAL_STATE).is_file():
        return None
    record = json.loads(path.read_text(encoding="utf-8"))
    if record.get("final_sha256") != _final_key(run_dir):
        return None
    with np.load(final_dir(run_dir) / FINAL_STATE) as arrays:
        return record, {k: arrays[k] for k in arrays.files}


def write_final_adaptation(config: ExperimentConfig, run_dir: str | Path,
                           inputs: InputProvider | None = None) -> dict[str, Any] | None:
    """The final model's adaptation state and (with ``adaptation``) its chosen settings (see the module)."""
    from polyemo.experiment.final import final_dir, load_final_model, read_final_info
    from polyemo.experiment.selection import apply_candidate, choose_adaptation, restrict
    from polyemo.splits.core import labelled_rows
    from polyemo.train.adaptation import adaptation_state

    run_dir = Path(run_dir)
    info = read_final_info(run_dir)
    if info is None or info.target != "label" or config.features != "pooled":
        return None
    current = read_final_adaptation(run_dir)
    if current is not None:
        return current[0]
    if inputs is None:  # a finished run asked again: the same plan and inputs code as the final model's
        from polyemo.experiment.inputs import load_inputs

        inputs = load_inputs(config)
    estimator, info = load_final_model(run_dir)
    rows = labelled_rows(inputs.manifest, TARGET_COLUMN)
    rows = rows[rows[TARGET_COLUMN].isin(info.classes)]
    data = inputs.split_data(rows, info.classes, fold_class_masks(rows, info.classes))
    data = restrict(data, [list(inputs.layers).index(layer) for layer in info.encoder_layers])
    state = adaptation_state(estimator, data)
    record: dict[str, Any] = {"final_sha256": _final_key(run_dir), "n_rows": len(rows), "settings": {},
                              "selection": {}, "ships": None,
                              "chosen_by": "default settings (strength 1.0): the run chose none"}
    spec = config.adaptation
    if spec is not None and spec.by is not None:
        fixed = apply_candidate(config, info.selection["candidates"][info.selection["chosen"]]) \
            if info.selection else config
        options = spec.options()
        records = choose_adaptation(fixed, rows, rows.iloc[:0], inputs, info.classes, options, by=spec.by,
                                    params=spec.by_params, metric=config.metrics.primary)
        languages = sorted({g for record_ in records.values() for groups in record_.inner_test_groups for g in groups})
        record["chosen_by"] = (f"inner {spec.by} over the model's own training data (held out in turn: "
                               f"{', '.join(languages)}), mean {records[spec.adapters[0]].metric}")
        best, best_gain = None, 0.0
        for name, chosen in records.items():
            record["settings"][name] = chosen.choice
            record["selection"][name] = {"candidates": chosen.candidates, "scores": chosen.scores,
                                         "chosen": chosen.chosen, "inner_test_groups": chosen.inner_test_groups}
            plain = [s for c, s in zip(chosen.candidates, chosen.scores) if float(c.get("strength", 1.0)) == 0.0]
            gain = chosen.scores[chosen.chosen] - plain[0] if plain else 0.0
            if gain > best_gain and float(chosen.choice.get("strength", 1.0)) > 0:
                best, best_gain = name, gain
        record["ships"] = best
    elif spec is not None:
        record["settings"] = {name: options_[0] for name, options_ in spec.options().items()}
    with atomic_path(final_dir(run_dir) / FINAL_STATE) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **{k: np.asarray(v) for k, v in state.items()})
    write_json(final_dir(run_dir) / ADAPTATION_FILE, record)
    return record
