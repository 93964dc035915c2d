"""Report files: JSON that loads back, markdown, and a confusion-matrix PNG."""

from __future__ import annotations

import json

import numpy as np
import pytest
from matplotlib.image import imread

from polyemo.metrics import ClassificationResult, FoldAggregate, aggregate_folds, evaluate_classification, evaluate_regression
from polyemo.report import plot_confusion, write_metrics_report


def _predictions(n: int, seed: int):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 3, n)
    return y_true, np.where(rng.random(n) < 0.7, y_true, rng.integers(0, 3, n))


def test_write_report_classification(tmp_path):
    y_true, y_pred = _predictions(120, 0)
    result = evaluate_classification(y_true, y_pred, ["anger", "neutral", "sadness"], n_boot=100)
    paths = write_metrics_report(result, tmp_path / "run", title="emodb test")
    assert set(paths) == {"json", "markdown", "confusion"}
    assert ClassificationResult.from_json(paths["json"]) == result
    markdown = paths["markdown"].read_text()
    assert markdown.startswith("# emodb test") and "UA (unweighted average recall)" in markdown
    assert "metrics_confusion.png" in markdown
    image = imread(paths["confusion"])
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200
    assert not list((tmp_path / "run").glob(".*.tmp"))  # atomic writes leave no temporaries


def test_plot_confusion_from_counts_with_empty_row(tmp_path):
    counts = np.array([[5, 1, 0], [0, 0, 0], [2, 0, 7]])
    path = plot_confusion(counts, tmp_path / "cm.png", labels=["a", "b", "c"], title="counts")
    assert imread(path).shape[2] in (3, 4)
    with pytest.raises(ValueError, match="labels"):
        plot_confusion(counts, tmp_path / "bad.png", labels=["a", "b"])
    with pytest.raises(ValueError, match="square"):
        plot_confusion(np.ones((2, 3)), tmp_path / "bad.png")


def test_write_report_folds_and_regression(tmp_path):
    folds = [_predictions(60, seed) for seed in (1, 2, 3)]
    agg = aggregate_folds(folds, ["a", "b", "c"], n_boot=50)
    paths = write_metrics_report(agg, tmp_path, name="cv")
    data = json.loads(paths["json"].read_text())
    assert set(data) >= {"mean_of_folds", "pooled", "folds"}
    assert FoldAggregate.model_validate(data).pooled.n == 180
    assert "mean_of_folds" in paths["markdown"].read_text()
    assert paths["confusion"].exists()

    rng = np.random.default_rng(4)
    t = rng.normal(size=(40, 3))
    reg = evaluate_regression(t, t + rng.normal(scale=0.5, size=(40, 3)), n_boot=50)
    paths = write_metrics_report(reg, tmp_path, name="dims")
    assert set(paths) == {"json", "markdown"}
    assert "| arousal |" in paths["markdown"].read_text()


def test_fold_report_shows_both_intervals_and_what_was_scored(tmp_path):
    rng = np.random.default_rng(5)
    folds = []
    for k in range(4):
        y_true = rng.integers(0, 3, 60)
        y_pred = np.where(rng.random(60) < 0.7, y_true, rng.integers(0, 3, 60))
        folds.append({"y_true": y_true, "y_pred": y_pred, "groups": [f"f{k}s{i % 5}" for i in range(60)], "name": f"f{k}"})
    agg = aggregate_folds(folds, ["anger", "neutral", "sadness"], n_boot=200)
    paths = write_metrics_report(agg, tmp_path, name="metrics", title="emodb: loso", summary="UA mean of 4 folds ...")
    text = paths["markdown"].read_text()
    assert text.startswith("# emodb: loso\n\nUA mean of 4 folds ...\n")
    ua = agg.mean_of_folds["ua"]
    assert f"| {100 * ua.mean:.2f} ± {100 * ua.std:.2f} | [{100 * ua.ci.low:.2f}, {100 * ua.ci.high:.2f}] |" in text
    assert "mean_of_folds CI: 95 % speaker-cluster bootstrap within folds (200 resamples)" in text
    assert "pooled CI: 95 % speaker-cluster bootstrap (200 resamples)" in text
    assert "classes scored: 3 (anger, neutral, sadness)" in text
    loaded = FoldAggregate.model_validate_json(paths["json"].read_text())
    assert loaded.mean_of_folds["ua"].ci == ua.ci


def test_old_name_is_an_alias():
    from polyemo.report import write_report

    assert write_report is write_metrics_report
