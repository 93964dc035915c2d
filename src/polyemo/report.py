"""Reports of evaluation results: JSON, a markdown page, and confusion-matrix figures.

Figures are drawn with matplotlib's Agg canvas directly (no pyplot state), so reports can be
written from worker threads and on machines without a display. Every file is written
atomically (``polyemo.io``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from polyemo.io import atomic_path, write_text
from polyemo.metrics import ClassificationResult, FoldAggregate, RegressionResult

Result = ClassificationResult | RegressionResult | FoldAggregate


def plot_confusion(
    result: ClassificationResult | np.ndarray,
    path: str | os.PathLike[str],
    labels: list[str] | None = None,
    title: str | None = None,
) -> Path:
    """Save a confusion matrix as PNG: colour = row-normalised rate (recall on the diagonal),
    each cell annotated with the percentage and the count; rows true, columns predicted.

    ``result`` is a :class:`ClassificationResult` or a (C, C) count matrix with ``labels``.
    Rows without true examples are left blank.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if isinstance(result, ClassificationResult):
        counts = result.confusion_array()
        labels = labels or result.labels
        if title is None:
            title = f"UA {100 * result.ua:.1f}%  WA {100 * result.wa:.1f}%  macro-F1 {100 * result.macro_f1:.1f}%  (n={result.n})"
    else:
        counts = np.asarray(result, dtype=np.int64)
        if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
            raise ValueError(f"a confusion matrix must be square, got shape {counts.shape}")
        labels = labels or [str(i) for i in range(counts.shape[0])]
    if len(labels) != counts.shape[0]:
        raise ValueError(f"{len(labels)} labels for a {counts.shape[0]}x{counts.shape[0]} confusion matrix")
    support = counts.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        rates = np.where(support > 0, counts / support, np.nan)

    size = max(4.0, 0.75 * len(labels) + 2.0)
    figure = Figure(figsize=(size + 1.0, size), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(np.ma.masked_invalid(rates), cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="fraction of true class")
    axes.set_xticks(range(len(labels)), labels=labels, rotation=45, ha="right")
    axes.set_yticks(range(len(labels)), labels=labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    for i in range(len(labels)):
        for j in range(len(labels)):
            if np.isnan(rates[i, j]):
                continue
            colour = "white" if rates[i, j] > 0.5 else "black"
            axes.text(j, i, f"{100 * rates[i, j]:.0f}%\n({counts[i, j]})", ha="center", va="center", fontsize=8, color=colour)
    if title:
        axes.set_title(title, fontsize=9)
    figure.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    return path


def to_markdown(result: Result, title: str | None = None, summary: str | None = None) -> str:
    """The result's tables under ``title``; ``summary`` (e.g. what was scored, how, with which
    intervals) goes between the title and the tables."""
    body = result.to_markdown()
    if summary:
        body = f"{summary.strip()}\n\n{body}"
    return f"# {title}\n\n{body}\n" if title else body + "\n"


def write_metrics_report(result: Result, directory: str | os.PathLike[str], name: str = "metrics", title: str | None = None,
                 summary: str | None = None) -> dict[str, Path]:
    """Write ``<name>.json``, ``<name>.md`` and, for categorical results, ``<name>_confusion.png``
    (for folds: the pooled confusion matrix) into ``directory``; returns the paths by kind.
    ``summary``: a paragraph placed under the title of the markdown page."""
    directory = Path(directory)
    paths = {"json": directory / f"{name}.json", "markdown": directory / f"{name}.md"}
    result.to_json(paths["json"])
    classification = result.pooled if isinstance(result, FoldAggregate) else result
    markdown = to_markdown(result, title, summary)
    if isinstance(classification, ClassificationResult):
        paths["confusion"] = directory / f"{name}_confusion.png"
        caption = "pooled over folds" if isinstance(result, FoldAggregate) else None
        plot_confusion(classification, paths["confusion"],
                       title=None if caption is None else f"{caption}: UA {100 * classification.ua:.1f}%, "
                       f"{len(classification.evaluated_classes)} classes scored (n={classification.n})")
        markdown += f"\n![confusion matrix]({paths['confusion'].name})\n"
    write_text(paths["markdown"], markdown)
    return paths


#: deprecated alias (clashed with the run report of :mod:`polyemo.experiment`); use write_metrics_report
write_report = write_metrics_report
