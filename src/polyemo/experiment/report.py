"""Report a run: every file a finished run shows, from its :class:`~polyemo.experiment.score.RunScores`.

``metrics.json`` / ``metrics.md`` / ``metrics_confusion.png`` (:func:`polyemo.report.write_report`),
``predictions.csv``, ``by_corpus.json``, ``layer_weights.png``, ``layer_selection.png``,
``cross_corpus.png`` / ``.csv`` and ``report.md``. Tables, plots and markdown only: every
number shown was computed by :mod:`polyemo.experiment.score` (or the folds).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from polyemo.experiment.config import ExperimentConfig
from polyemo.experiment.plan import ExperimentPlan
from polyemo.experiment.results import RunResult
from polyemo.experiment.score import RunScores
from polyemo.experiment.scoring import cells_table, class_text, normalisation_text
from polyemo.io import atomic_path, write_json, write_table, write_text
from polyemo.numbers import percent


def write_run_report(out_dir: Path, plan: ExperimentPlan, scores: RunScores, fold_info: dict[str, dict[str, Any]],
                     feature_failures: int) -> None:
    """Write the run's metrics, predictions, figures and ``report.md`` into ``out_dir``."""
    from polyemo.heads.layers import plot_layer_weights
    from polyemo.report import write_report as write_metrics

    config, result = plan.config, scores.result
    names = [f.name for f in plan.split.folds]
    enrol = config.training.get("enrol_clips")
    summary = (f"{result.headline}.\n\nClasses of the experiment: {class_text(result.classes)}. Protocol "
               f"`{result.protocol}`; normalisation {normalisation_text(result.normalisation, enrol)}. "
               "`mean_of_folds`: each fold scored on its own test utterances, then averaged; `pooled`: every "
               "test prediction scored together.")
    write_metrics(scores.aggregate, out_dir, name="metrics", title=f"{config.name}: {config.protocol.canonical}",
                  summary=summary)
    write_table(out_dir / "predictions.csv", scores.predictions)
    if scores.by_corpus:
        write_json(out_dir / "by_corpus.json", scores.by_corpus)

    images = {"Confusion matrix (pooled over folds)": "metrics_confusion.png"}
    # Only folds whose model learned layer weights (``select`` may give other folds another head).
    weighted = [n for n in names if fold_info[n].get("layer_weights") is not None]
    weights = [fold_info[n]["layer_weights"] for n in weighted]
    if weights and len({len(w) for w in weights}) == 1 and len(weights[0]) > 1:
        layer_names = [str(x) for x in fold_info[weighted[0]]["layers"]]
        plot_layer_weights(np.array(weights), out_dir / "layer_weights.png", layer_names=layer_names,
                           title=f"Learned layer weights ({config.encoder.name}), mean ± std over folds")
        images["Layer weights"] = "layer_weights.png"
    if plot_layer_selection([fold_info[n] for n in names], out_dir / "layer_selection.png"):
        images["Layer selection"] = "layer_selection.png"
    cells = scores.cells
    table = cross_corpus_table(cells)
    if table is not None:
        write_table(out_dir / "cross_corpus.csv", table.reset_index())
        write_table(out_dir / "cross_corpus_cells.csv", cells)
        plot_cross_corpus(table, out_dir / "cross_corpus.png", low=cross_corpus_table(cells, "ua_low"),
                          high=cross_corpus_table(cells, "ua_high"),
                          title=f"Cross-corpus UA (%), {config.name}: pooled over each cell's test predictions"
                                + (f"\nbrackets: {cells['interval'].iloc[0]}" if cells["interval"].iloc[0] else ""))
        images["Cross-corpus UA"] = "cross_corpus.png"
    write_report(out_dir, config, result, scores.aggregate, plan.manifest, feature_failures, images,
                 scores.corpus_classes)


def plot_layer_selection(folds: list[dict[str, Any]], path: Path) -> Path | None:
    """Validation score per layer (mean and range over folds) and how often each was chosen."""
    rows = [f for f in folds if f.get("layer_scores")]
    if not rows:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    layers = sorted({int(k) for f in rows for k in f["layer_scores"]})
    scores = np.array([[f["layer_scores"].get(str(layer), np.nan) for layer in layers] for f in rows])
    chosen = [f["selected_layer"] for f in rows]
    figure = Figure(figsize=(max(4.0, 0.4 * len(layers) + 2), 3.2), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.plot(layers, np.nanmean(scores, axis=0), marker="o", label="mean over folds")
    axes.fill_between(layers, np.nanmin(scores, axis=0), np.nanmax(scores, axis=0), alpha=0.2, label="fold range")
    counts = {layer: chosen.count(layer) for layer in layers}
    for layer in layers:
        if counts[layer]:
            axes.annotate(f"chosen x{counts[layer]}", (layer, np.nanmax(scores[:, layers.index(layer)])),
                          textcoords="offset points", xytext=(0, 4), ha="center", fontsize=7)
    axes.set_xlabel("encoder layer")
    axes.set_ylabel("validation score")
    axes.set_title("Layer chosen on validation (training speakers only)", fontsize=9)
    axes.legend(fontsize="small")
    figure.subplots_adjust(left=0.15, right=0.97, bottom=0.16, top=0.88)  # fixed margins: tight_layout is slow
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    return path


def plot_cross_corpus(matrix: pd.DataFrame, path: Path, title: str = "Cross-corpus UA (%)",
                      low: pd.DataFrame | None = None, high: pd.DataFrame | None = None) -> Path:
    """Heatmap of a (train corpus x test corpus) table of UA in [0, 1]; NaN cells blank.

    ``low``/``high`` (same shape): each cell's interval, written under its value."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    values = matrix.to_numpy(dtype=float)
    bounds = None
    if low is not None and high is not None:
        bounds = (low.reindex(index=matrix.index, columns=matrix.columns).to_numpy(dtype=float),
                  high.reindex(index=matrix.index, columns=matrix.columns).to_numpy(dtype=float))
    figure = Figure(figsize=((1.4 if bounds else 1.0) * values.shape[1] + 2.5, 0.8 * values.shape[0] + 1.8), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(np.ma.masked_invalid(values), cmap="viridis", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="UA")
    axes.set_xticks(range(values.shape[1]), labels=list(matrix.columns), rotation=45, ha="right")
    axes.set_yticks(range(values.shape[0]), labels=list(matrix.index))
    axes.set_xlabel("test corpus")
    axes.set_ylabel("train corpus")
    from matplotlib.patches import Rectangle

    in_domain = False
    for i, row in enumerate(matrix.index):
        for j, column in enumerate(matrix.columns):
            if np.isfinite(values[i, j]):
                text = f"{100 * values[i, j]:.1f}"
                if bounds is not None and np.isfinite(bounds[0][i, j]) and np.isfinite(bounds[1][i, j]):
                    text += f"\n[{100 * bounds[0][i, j]:.0f}, {100 * bounds[1][i, j]:.0f}]"
                axes.text(j, i, text, ha="center", va="center", fontsize=8 if bounds is None else 7,
                          color="black" if values[i, j] > 0.6 else "white")
                if row == column:  # trained and tested on the same corpus (speaker-independent folds)
                    axes.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=1.5))
                    in_domain = True
    if in_domain:
        title += "\nred outline: in-domain (same corpus, its own folds)"
    axes.set_title(title, fontsize=9)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", bbox_inches="tight")
    return path


def cross_corpus_table(cells: pd.DataFrame, column: str = "ua") -> pd.DataFrame | None:
    """Train corpus x test corpus matrix of ``column`` from the long table of cells made by
    :func:`polyemo.experiment.scoring.cross_corpus_cells` (every cell pooled over its own test
    predictions, the same way on and off the diagonal); None when there are no cells."""
    if cells is None or cells.empty:
        return None
    return cells_table(cells, column)


def md_table(frame: pd.DataFrame) -> str:
    """A markdown table of a frame (blank cells for missing values)."""
    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "---|" * len(frame.columns)
    body = ["| " + " | ".join("" if pd.isna(v) else str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def _pct(value: float | None) -> str:
    return percent(value, 2)


def write_report(out_dir: Path, config: ExperimentConfig, result: RunResult, aggregate, manifest: pd.DataFrame,
                 feature_failures: int, images: dict[str, str],
                 corpus_classes: dict[str, list[str]] | None = None) -> None:
    """``report.md``: the headline, the setup, the data, the folds, the aggregate and the figures."""
    corpora = manifest.groupby("corpus").agg(utterances=("utt_id", "size"), speakers=("speaker", "nunique"),
                                             language=("language", "first")).reset_index()
    protocol_params = f" {json.dumps(config.protocol.params)}" if config.protocol.params else ""
    head_params = f" {json.dumps(config.head.params)}" if config.head.params else ""
    lines = [
        f"# {config.name}",
        "",
        f"**{result.headline}.**",
        "",
        f"Std of the {result.primary_metric} over folds: {_pct(result.primary_std)} points. Every test utterance "
        "was scored once, by the model of the fold that held it out; no setting was chosen on test scores.",
        "",
        "## Setup",
        "",
        f"- target: `{config.target}`; classes of the experiment: {class_text(result.classes)}",
        f"- classes scored (present in the test references; UA and macro-F1 average over them): "
        f"{class_text(result.scored_classes)}",
        f"- protocol: `{result.protocol}`{protocol_params}",
        f"- encoder: `{config.encoder.name}` (precision {config.encoder.precision or 'default'}, layers "
        f"{config.encoder.layers}, selection {config.encoder.select}); features: {config.features}",
        f"- head: `{config.head.name}`{head_params}; loss: `{config.loss.name}`; "
        f"normalisation: {normalisation_text(result.normalisation or config.normalisation, config.training.get('enrol_clips'))}; "
        f"seed {config.seed}",
        "- validation: carved from each fold's training speakers; the test part is read once after training",
        *([f"- select: {len(config.select.expanded())} candidate settings chosen in each fold by "
           f"`{config.select.by}` over its training rows only (fold.json: `selection`)"] if config.select else []),
        f"- refit on train + validation after the choices: {'yes' if config.train_config().refit else 'no'}",
        f"- intervals: mean of folds: {result.intervals.get('mean_of_folds', 'none')}; "
        f"pooled: {result.intervals.get('pooled', 'none')}",
    ]
    if config.limit.active:
        lines.append(f"- **limited** data (smoke test): {config.limit.model_dump(exclude_none=True)}")
    lines += ["", "## Data", "", md_table(corpora)]
    if feature_failures:
        lines += ["", f"{feature_failures} rows had no features and were left out (feature_failures.csv)."]
    fold_rows = pd.DataFrame([{
        "fold": f.name, "train": f.n_train, "val": f.n_validation, "test": f.n_test,
        "test speakers": f.n_test_speakers or "",
        "UA %": _pct(f.ua), "WA %": _pct(f.wa), "macro-F1 %": _pct(f.macro_f1),
        "classes scored": len(f.scored_classes) or "",
        "layer": "" if f.selected_layer is None else f.selected_layer,
        "epoch": "" if f.best_epoch is None else f.best_epoch,
    } for f in result.folds])
    lines += ["", "## Folds", "", md_table(fold_rows), "", "## Aggregate", "", aggregate.to_markdown()]
    if result.by_corpus:
        primary = result.primary_metric
        rows = []
        for corpus, m in result.by_corpus.items():
            scored = (corpus_classes or {}).get(corpus, [])
            rows.append({"corpus": corpus, **{k: _pct(v) for k, v in m.items() if not k.endswith(("_low", "_high"))},
                         f"{primary} CI": f"[{_pct(m.get(f'{primary}_low', math.nan))}, {_pct(m.get(f'{primary}_high', math.nan))}]",
                         "classes scored": f"{len(scored)}: {', '.join(scored)}" if scored else ""})
        lines += ["", f"## By test corpus (pooled, %; CI: {result.intervals.get('pooled_by_corpus', '')})", "",
                  md_table(pd.DataFrame(rows))]
    for title, name in images.items():
        lines += ["", f"## {title}", "", f"![{title}]({name})"]
    seconds = ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items())
    lines += ["", f"Time: {seconds}.", ""]
    write_text(out_dir / "report.md", "\n".join(lines))
