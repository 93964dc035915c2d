"""Evaluation metrics for categorical and dimensional emotion, with honest uncertainty.

Categorical (``classification_metrics`` / ``evaluate_classification``):

* **UA** -- unweighted average recall (macro recall, "balanced accuracy").
* **WA** -- weighted accuracy, i.e. plain accuracy (correct / total).
* **macro-F1**, per-class precision / recall / F1 / support, and the confusion matrix
  (rows: true class, columns: predicted class, in the order of ``labels``).

Rule for classes absent from ``y_true``: their recall is 0/0, undefined, so UA and macro-F1
average over the *evaluated classes* -- those with support > 0 in ``y_true`` (listed in
``evaluated_classes``). Predicting an absent class is still an error: it lowers the recall
of the true class. This matches ``sklearn.metrics.balanced_accuracy_score`` always, and
``f1_score(average="macro", labels=evaluated_classes)``; when every class occurs in
``y_true`` both equal scikit-learn's defaults. Per-class F1 is 2 TP / (support + predicted).
Undefined per-class values are NaN (``null`` in JSON): recall of an absent class, precision
of a never-predicted class, F1 of a class neither present nor predicted.

Dimensional (``regression_metrics`` / ``evaluate_regression``): per dimension Lin's
concordance correlation coefficient (CCC, population moments), Pearson r and MAE; rows
where the target or prediction is NaN are skipped per dimension.

Uncertainty (``bootstrap_ci``): percentile bootstrap intervals, vectorised over resamples;
with ``groups`` (speakers) whole groups are resampled (cluster bootstrap), which is the
honest interval when utterances of a speaker are correlated.

Folds (``aggregate_folds``): BOTH the mean +- std of per-fold metrics (``mean_of_folds``)
and the metrics of all folds' predictions pooled together (``pooled``), each with an
interval. They differ -- e.g. CCC pooled over folds rewards getting each fold's offset
right -- so every number says which one it is. The interval of the mean of folds comes from
a bootstrap within folds: each fold's test speakers (its utterances where a fold has a single
test speaker) are resampled independently, each fold re-scored and the scores averaged. The
pooled interval may be stratified (``strata``, e.g. the test corpus), so every stratum keeps
its share of the resamples.

Pairs (``paired_difference``): the interval of the difference of two systems' mean of folds
on the same test rows, both re-scored on the same resamples; a system against itself gives
exactly 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from sklearn.metrics import confusion_matrix

DIMENSIONS: tuple[str, ...] = ("arousal", "valence", "dominance")
CLASSIFICATION_METRICS: tuple[str, ...] = ("ua", "wa", "macro_f1")
REGRESSION_METRICS: tuple[str, ...] = ("ccc", "pearson", "mae")

METRIC_TITLES: dict[str, str] = {
    "ua": "UA (unweighted average recall)",
    "wa": "WA (accuracy)",
    "macro_f1": "macro-F1",
    "ccc": "CCC",
    "pearson": "Pearson r",
    "mae": "MAE",
    "mean_ccc": "mean CCC",
}


def _nan_if_none(value: Any) -> Any:
    return math.nan if value is None else value


# A metric value: NaN where undefined; written as ``null`` in JSON and read back as NaN.
Metric = Annotated[float, BeforeValidator(_nan_if_none)]


class _Result(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def to_dict(self) -> dict[str, Any]:
        """Plain Python values (NaN where undefined)."""
        return self.model_dump()

    def to_json(self, path: str | Path | None = None) -> str:
        """JSON text (NaN -> null); written atomically to ``path`` when given."""
        text = self.model_dump_json(indent=2)
        if path is not None:
            from polyemo.io import write_text

            write_text(path, text + "\n")
        return text

    @classmethod
    def from_json(cls, source: str | Path) -> Any:
        """Read a result from a JSON file path or from JSON text."""
        text = str(source)
        if not text.lstrip().startswith("{"):
            text = Path(source).read_text(encoding="utf-8")
        return cls.model_validate_json(text)


class ConfidenceInterval(_Result):
    """A percentile bootstrap interval ``[low, high]`` around ``value`` (the full-data estimate)."""

    metric: str
    value: Metric
    low: Metric
    high: Metric
    alpha: float
    n_boot: int
    n_valid: int  # resamples where the metric was defined
    #: what was resampled; "mixed": speakers in some folds, utterances in folds with one speaker
    unit: Literal["utterance", "group", "mixed"]
    n_units: int
    #: how the resamples were drawn, in words (e.g. "speaker-cluster bootstrap within folds")
    method: str = ""
    n_strata: int = 1  # units were resampled within this many strata

    @property
    def level(self) -> float:
        return 1.0 - self.alpha

    @property
    def excludes_zero(self) -> bool:
        """For an interval of a difference: does it lie entirely on one side of 0?"""
        return bool(np.isfinite(self.low) and np.isfinite(self.high) and (self.low > 0 or self.high < 0))

    def describe(self) -> str:
        """E.g. ``95 % speaker-cluster bootstrap within folds (1000 resamples)``."""
        what = self.method or ("speaker-cluster bootstrap" if self.unit == "group" else "utterance bootstrap")
        return f"{100 * self.level:.0f} % {what} ({self.n_boot} resamples)"


class ClassMetrics(_Result):
    label: str
    precision: Metric
    recall: Metric
    f1: Metric
    support: int  # true examples
    predicted: int  # predictions of this class


class ClassificationResult(_Result):
    """Categorical metrics of one set of predictions (values in [0, 1])."""

    task: Literal["classification"] = "classification"
    labels: list[str]
    n: int
    ua: Metric
    wa: Metric
    macro_f1: Metric
    evaluated_classes: list[str]
    per_class: list[ClassMetrics]
    confusion: list[list[int]]  # rows true, columns predicted, order of ``labels``
    ci: dict[str, ConfidenceInterval] = Field(default_factory=dict)

    def summary(self) -> dict[str, float]:
        return {"ua": self.ua, "wa": self.wa, "macro_f1": self.macro_f1}

    def confusion_array(self) -> np.ndarray:
        return np.asarray(self.confusion, dtype=np.int64).reshape(len(self.labels), len(self.labels))

    def to_markdown(self) -> str:
        """Summary table (with intervals when computed), per-class table, confusion matrix; in %."""
        lines = [_summary_table(self.summary(), self.ci, percent=True), ""]
        lines += ["| class | precision (%) | recall (%) | F1 (%) | support | predicted |", "|---|---:|---:|---:|---:|---:|"]
        for row in self.per_class:
            lines.append(
                f"| {row.label} | {_fmt(row.precision, True)} | {_fmt(row.recall, True)} | {_fmt(row.f1, True)} "
                f"| {row.support} | {row.predicted} |"
            )
        lines += ["", "Confusion matrix (rows: true, columns: predicted)", ""]
        lines.append("| true \\ predicted | " + " | ".join(self.labels) + " |")
        lines.append("|---|" + "---:|" * len(self.labels))
        for label, counts in zip(self.labels, self.confusion):
            lines.append(f"| {label} | " + " | ".join(str(c) for c in counts) + " |")
        absent = [c for c in self.labels if c not in self.evaluated_classes]
        note = f"n = {self.n}. UA and macro-F1 average over the {len(self.evaluated_classes)} classes present in the reference"
        note += f" (absent: {', '.join(absent)})." if absent else "."
        return "\n".join(lines + ["", note])


class DimensionMetrics(_Result):
    ccc: Metric
    pearson: Metric
    mae: Metric
    n: int  # rows with both target and prediction


class RegressionResult(_Result):
    """Dimensional metrics, per dimension (arousal, valence, dominance by default)."""

    task: Literal["regression"] = "regression"
    dims: dict[str, DimensionMetrics]
    mean_ccc: Metric  # mean CCC of the dimensions that have targets (n > 0)
    ci: dict[str, ConfidenceInterval] = Field(default_factory=dict)  # keys like "ccc_arousal"

    def summary(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for dim, m in self.dims.items():
            for name in REGRESSION_METRICS:
                out[f"{name}_{dim}"] = getattr(m, name)
        out["mean_ccc"] = self.mean_ccc
        return out

    def to_markdown(self) -> str:
        lines = ["| dimension | CCC | Pearson r | MAE | n |", "|---|---:|---:|---:|---:|"]
        for dim, m in self.dims.items():
            cells = []
            for name in REGRESSION_METRICS:
                cell = _fmt(getattr(m, name), False)
                ci = self.ci.get(f"{name}_{dim}")
                if ci is not None:
                    cell += f" [{_fmt(ci.low, False)}, {_fmt(ci.high, False)}]"
                cells.append(cell)
            lines.append(f"| {dim} | " + " | ".join(cells) + f" | {m.n} |")
        lines.append(f"| **mean CCC** | {_fmt(self.mean_ccc, False)} | | | |")
        if self.ci:
            level = next(iter(self.ci.values())).level
            lines += ["", f"Brackets: {level:.0%} percentile bootstrap interval."]
        return "\n".join(lines)


class FoldStat(_Result):
    mean: Metric
    std: Metric  # sample standard deviation over folds (ddof=1); NaN for one fold
    values: list[Metric]
    #: interval of the mean of folds: every fold's test units resampled within that fold
    ci: ConfidenceInterval | None = None


AnyResult = Annotated[Union[ClassificationResult, RegressionResult], Field(discriminator="task")]


class FoldAggregate(_Result):
    """Cross-validation summary: ``mean_of_folds`` (mean +- std of per-fold metrics) and
    ``pooled`` (metrics of all folds' predictions together, with bootstrap intervals)."""

    task: Literal["classification", "regression"]
    fold_names: list[str]
    mean_of_folds: dict[str, FoldStat]
    pooled: AnyResult
    folds: list[AnyResult]

    def to_markdown(self) -> str:
        pooled = self.pooled.summary()
        percent = self.task == "classification"
        unit = " (%)" if percent else ""
        k = len(self.fold_names)
        lines = [
            f"| metric{unit} | mean_of_folds (mean ± std, {k} folds) | mean_of_folds CI | pooled (all predictions) "
            "| pooled CI |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, stat in self.mean_of_folds.items():
            ci = self.pooled.ci.get(name)
            ci_cell = f"[{_fmt(ci.low, percent)}, {_fmt(ci.high, percent)}]" if ci is not None else ""
            fold_ci = f"[{_fmt(stat.ci.low, percent)}, {_fmt(stat.ci.high, percent)}]" if stat.ci is not None else ""
            lines.append(
                f"| {METRIC_TITLES.get(name, name)} | {_fmt(stat.mean, percent)} ± {_fmt(stat.std, percent)} "
                f"| {fold_ci} | {_fmt(pooled[name], percent)} | {ci_cell} |"
            )
        notes = []
        first_fold_ci = next((s.ci for s in self.mean_of_folds.values() if s.ci is not None), None)
        if first_fold_ci is not None:
            notes.append(f"mean_of_folds CI: {first_fold_ci.describe()}")
        if self.pooled.ci:
            notes.append(f"pooled CI: {next(iter(self.pooled.ci.values())).describe()}")
        if isinstance(self.pooled, ClassificationResult):
            scored = self.pooled.evaluated_classes
            notes.append(f"classes scored: {len(scored)} ({', '.join(scored)})")
        if notes:
            lines += ["", "; ".join(notes) + "."]
        lines += ["", "| fold | " + " | ".join(self.mean_of_folds) + " |", "|---|" + "---:|" * len(self.mean_of_folds)]
        for i, fold in enumerate(self.fold_names):
            lines.append(f"| {fold} | " + " | ".join(_fmt(s.values[i], percent) for s in self.mean_of_folds.values()) + " |")
        return "\n".join(lines)


def _fmt(value: float, percent: bool) -> str:
    if value is None or not np.isfinite(value):
        return "—"
    return f"{100 * value:.2f}" if percent else f"{value:.4f}"


def _summary_table(values: Mapping[str, float], ci: Mapping[str, ConfidenceInterval], percent: bool) -> str:
    unit = " (%)" if percent else ""
    has_ci = any(name in ci for name in values)
    level = next(iter(ci.values())).level if has_ci else None
    first = next(iter(ci.values())) if has_ci else None
    kind = (first.method or f"{first.unit} bootstrap") if first is not None else ""
    header = f"| metric{unit} | value |" + (f" {level:.0%} CI ({kind}) |" if has_ci else "")
    lines = [header, "|---|---:|" + ("---:|" if has_ci else "")]
    for name, value in values.items():
        row = f"| {METRIC_TITLES.get(name, name)} | {_fmt(value, percent)} |"
        if has_ci:
            c = ci.get(name)
            row += f" [{_fmt(c.low, percent)}, {_fmt(c.high, percent)}] |" if c is not None else " |"
        lines.append(row)
    return "\n".join(lines)


# ----------------------------------------------------------------------------- inputs


def _label_names(labels: Any) -> list:
    if labels is None:
        return []
    classes = getattr(labels, "classes", labels)  # a polyemo.labels.LabelSet or a sequence
    out = list(classes)
    if len(set(out)) != len(out):
        raise ValueError(f"labels repeat a class: {out}")
    if not out:
        raise ValueError("labels is empty")
    return out


def _to_indices(values: Any, labels: list, role: str) -> np.ndarray:
    """Class indices in ``labels`` from indices, names, or (for predictions) scores (N, C)."""
    arr = np.asarray(values)
    if arr.ndim == 2:
        if role != "y_pred":
            raise ValueError(f"{role} must be one-dimensional, got shape {arr.shape}")
        if arr.shape[1] != len(labels):
            raise ValueError(f"{role} scores have {arr.shape[1]} columns but there are {len(labels)} labels")
        return arr.argmax(axis=1).astype(np.int64)
    if arr.ndim != 1:
        raise ValueError(f"{role} must be one-dimensional, got shape {arr.shape}")
    labels_are_ints = all(isinstance(c, (int, np.integer)) for c in labels)
    if arr.dtype.kind == "f" and arr.size and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
        arr = arr.astype(np.int64)
    if arr.dtype.kind in "iub" and not labels_are_ints:
        arr = arr.astype(np.int64)
        bad = np.flatnonzero((arr < 0) | (arr >= len(labels)))
        if bad.size:
            hint = " (-1 marks unlabelled rows: drop them before scoring)" if np.any(arr[bad] == -1) else ""
            raise ValueError(
                f"{role} holds class indices outside 0..{len(labels) - 1}{hint}: "
                f"rows {bad[:5].tolist()} have {arr[bad[:5]].tolist()}"
            )
        return arr
    lookup = {c: i for i, c in enumerate(labels)}
    lookup.update({str(c): i for i, c in enumerate(labels)})
    out = np.empty(arr.shape[0], dtype=np.int64)
    unknown: list = []
    for row, value in enumerate(arr.tolist()):
        index = lookup.get(value)
        if index is None:
            index = lookup.get(str(value), -1)
        if index < 0:
            unknown.append((row, value))
        out[row] = index
    if unknown:
        raise ValueError(f"{role} holds values that are not in labels {labels}: {unknown[:5]} (row, value)")
    return out


def _class_inputs(y_true: Any, y_pred: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, list[str]]:
    names = _label_names(labels)
    if not names:
        pred = np.asarray(y_pred)
        if pred.ndim == 2:
            raise ValueError("labels are required when y_pred holds scores")
        names = sorted(set(np.asarray(y_true).tolist()) | set(pred.tolist()))
    t = _to_indices(y_true, names, "y_true")
    p = _to_indices(y_pred, names, "y_pred")
    if t.shape[0] != p.shape[0]:
        raise ValueError(f"y_true has {t.shape[0]} rows but y_pred has {p.shape[0]}")
    if t.shape[0] == 0:
        raise ValueError("no predictions to score")
    return t, p, [str(c) for c in names]


#: speaker values that mean "not known": each such row is a cluster of its own
_UNKNOWN_GROUPS = frozenset({"", "nan", "none", "<na>", "unknown"})


def _groups_codes(groups: Any, n: int, role: str = "groups") -> np.ndarray | None:
    if groups is None:
        return None
    g = np.asarray(groups)
    if g.ndim != 1 or g.shape[0] != n:
        raise ValueError(f"{role} must have one entry per prediction ({n}), got shape {g.shape}")
    text = g.astype(str)
    if role == "groups":
        unknown = np.isin(np.char.lower(text), list(_UNKNOWN_GROUPS))
        if unknown.any():  # an unknown speaker is not one big speaker
            text = text.astype(object)
            text[unknown] = [f"\0row{i}" for i in np.flatnonzero(unknown)]
            text = text.astype(str)
    _, codes = np.unique(text, return_inverse=True)
    return codes.astype(np.int64)


def _cluster_units(codes: np.ndarray | None, strata: np.ndarray | None, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The unit of every row -- a (stratum, group) pair, or the row itself without groups --
    and the stratum of every unit."""
    base = np.arange(n, dtype=np.int64) if codes is None else codes
    stratum = np.zeros(n, dtype=np.int64) if strata is None else strata
    width = int(base.max()) + 1 if n else 1
    pairs, unit = np.unique(stratum * width + base, return_inverse=True)
    return unit.astype(np.int64), (pairs // width).astype(np.int64)


def _stratified_multiplicities(unit_stratum: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n_units) draw counts, each stratum resampled on its own (its size kept).

    Strata of a single unit could never vary, so they are resampled together (e.g. the
    folds of a leave-one-speaker-out run when the strata are folds)."""
    ids, counts = np.unique(unit_stratum, return_counts=True)
    strata = unit_stratum.copy()
    single = ids[counts == 1]
    if single.size > 1:
        strata[np.isin(strata, single)] = single[0]
    out = np.zeros((n_boot, unit_stratum.size))
    for stratum in np.unique(strata):
        members = np.flatnonzero(strata == stratum)
        out[:, members] = _multiplicities(members.size, n_boot, rng)
    return out


def _pooled_method(grouped: bool, n_strata: int, strata_name: str) -> str:
    what = "speaker-cluster bootstrap" if grouped else "utterance bootstrap"
    unit = "speakers" if grouped else "utterances"
    return f"{what}, {unit} resampled within each of {n_strata} {strata_name}" if n_strata > 1 else what


# ---------------------------------------------------------------- vectorised formulas


def _classification_from_confusion(cm: np.ndarray) -> dict[str, np.ndarray]:
    """UA, WA, macro-F1 and per-class values from confusion matrices (..., C, C)."""
    cm = np.asarray(cm, dtype=np.float64)
    support = cm.sum(axis=-1)
    predicted = cm.sum(axis=-2)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    present = support > 0
    n_present = present.sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(present, tp / support, np.nan)
        precision = np.where(predicted > 0, tp / predicted, np.nan)
        f1 = np.where(support + predicted > 0, 2 * tp / (support + predicted), np.nan)
        ua = np.where(present, recall, 0.0).sum(axis=-1) / n_present
        macro_f1 = np.where(present, f1, 0.0).sum(axis=-1) / n_present
        wa = tp.sum(axis=-1) / support.sum(axis=-1)
    return {"ua": ua, "wa": wa, "macro_f1": macro_f1, "precision": precision, "recall": recall, "f1": f1}


_MOMENTS = ("n", "sx", "sy", "sxx", "syy", "sxy", "sad")


def _regression_moments(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Per-row sufficient statistics (N, 7) for CCC, Pearson and MAE."""
    x, y = y_true, y_pred
    return np.stack([np.ones_like(x), x, y, x * x, y * y, x * y, np.abs(x - y)], axis=-1)


def _regression_from_moments(s: np.ndarray) -> dict[str, np.ndarray]:
    n, sx, sy, sxx, syy, sxy, sad = np.moveaxis(np.asarray(s, dtype=np.float64), -1, 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        mx, my = sx / n, sy / n
        vx = np.maximum(sxx / n - mx * mx, 0.0)
        vy = np.maximum(syy / n - my * my, 0.0)
        cov = sxy / n - mx * my
        denominator = vx + vy + (mx - my) ** 2
        ccc = np.where(denominator > 0, 2 * cov / denominator, np.nan)
        pearson = np.where((vx > 0) & (vy > 0), cov / np.sqrt(vx * vy), np.nan)
        mae = sad / n
    return {"ccc": np.clip(ccc, -1, 1), "pearson": np.clip(pearson, -1, 1), "mae": mae}


def concordance_cc(y_true: Any, y_pred: Any) -> float:
    """Lin's CCC = 2 cov / (var_t + var_p + (mean_t - mean_p)^2), population moments.

    NaN when both series are constant and equal (0/0); 0 when only one is constant.
    """
    x = np.asarray(y_true, dtype=np.float64)
    y = np.asarray(y_pred, dtype=np.float64)
    mx, my = x.mean(), y.mean()
    vx, vy = np.mean((x - mx) ** 2), np.mean((y - my) ** 2)
    cov = np.mean((x - mx) * (y - my))
    denominator = vx + vy + (mx - my) ** 2
    return float(2 * cov / denominator) if denominator > 0 else math.nan


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    dx, dy = x - x.mean(), y - y.mean()
    vx, vy = np.mean(dx * dx), np.mean(dy * dy)
    if vx <= 0 or vy <= 0:
        return math.nan
    return float(np.clip(np.mean(dx * dy) / math.sqrt(vx * vy), -1, 1))


# -------------------------------------------------------------------------- bootstrap


def _multiplicities(n_units: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n_units) counts: how often each unit is drawn in each resample."""
    draws = rng.integers(0, n_units, size=(n_boot, n_units))
    flat = draws + (np.arange(n_boot, dtype=np.int64) * n_units)[:, None]
    return np.bincount(flat.ravel(), minlength=n_boot * n_units).reshape(n_boot, n_units)


def _unit_confusions(t: np.ndarray, p: np.ndarray, n_classes: int, unit: np.ndarray, n_units: int) -> np.ndarray:
    """(n_units, C * C) confusion counts of each resampling unit."""
    k = n_classes * n_classes
    return np.bincount(unit * k + t * n_classes + p, minlength=n_units * k).reshape(n_units, k).astype(np.float64)


def _resampled_confusions(t: np.ndarray, p: np.ndarray, n_classes: int, groups: np.ndarray | None,
                          n_boot: int, rng: np.random.Generator, strata: np.ndarray | None = None) -> np.ndarray:
    cells = t * n_classes + p
    k = n_classes * n_classes
    if groups is None and strata is None:
        draws = rng.integers(0, t.shape[0], size=(n_boot, t.shape[0]))
        flat = cells[draws] + (np.arange(n_boot, dtype=np.int64) * k)[:, None]
        sums = np.bincount(flat.ravel(), minlength=n_boot * k).reshape(n_boot, k)
    else:
        unit, unit_stratum = _cluster_units(groups, strata, t.shape[0])
        per_unit = _unit_confusions(t, p, n_classes, unit, unit_stratum.size)
        sums = _stratified_multiplicities(unit_stratum, n_boot, rng) @ per_unit
    return sums.reshape(n_boot, n_classes, n_classes)


def _resampled_moments(x: np.ndarray, y: np.ndarray, groups: np.ndarray | None,
                       n_boot: int, rng: np.random.Generator, strata: np.ndarray | None = None) -> np.ndarray:
    shift = x.mean()  # CCC, r and MAE are unchanged by a common shift; it keeps raw moments precise
    stats = _regression_moments(x - shift, y - shift)
    if groups is None and strata is None:
        return _multiplicities(stats.shape[0], n_boot, rng).astype(np.float64) @ stats
    unit, unit_stratum = _cluster_units(groups, strata, x.size)
    units = np.zeros((unit_stratum.size, stats.shape[1]))
    np.add.at(units, unit, stats)
    return _stratified_multiplicities(unit_stratum, n_boot, rng) @ units


def _unit_counts(codes: np.ndarray | None, strata: np.ndarray | None, n: int) -> tuple[int, int]:
    """(number of resampling units, number of strata)."""
    if codes is None and strata is None:
        return n, 1
    _, unit_stratum = _cluster_units(codes, strata, n)
    return int(unit_stratum.size), int(np.unique(unit_stratum).size)


class _FoldResampler:
    """Bootstrap of a mean of folds: each fold's test units are resampled within that fold,
    independently of the other folds, and each fold's metric is recomputed.

    Units are speakers (clusters of utterances); a fold with fewer than two test speakers
    (e.g. leave-one-speaker-out) resamples its utterances instead -- one speaker drawn with
    replacement from one would never vary. The same resampler applied to two systems scored
    on the same folds gives a paired bootstrap (same utterances, same resamples)."""

    def __init__(self, groups: Sequence[np.ndarray | None], sizes: Sequence[int], n_boot: int, seed: int) -> None:
        rng = np.random.default_rng([seed, 8])
        self.n_boot = n_boot
        self.units: list[np.ndarray] = []
        self.weights: list[np.ndarray] = []
        self.kinds: list[str] = []
        for codes, n in zip(groups, sizes):
            if codes is None or np.unique(codes).size < 2:
                unit, kind = np.arange(n, dtype=np.int64), "utterance"
            else:
                unit, kind = np.unique(codes, return_inverse=True)[1].astype(np.int64), "group"
            self.units.append(unit)
            self.kinds.append(kind)
            self.weights.append(_multiplicities(int(unit.max()) + 1, n_boot, rng).astype(np.float64))

    @property
    def unit(self) -> Literal["utterance", "group", "mixed"]:
        kinds = set(self.kinds)
        return "mixed" if len(kinds) > 1 else kinds.pop()  # type: ignore[return-value]

    @property
    def n_units(self) -> int:
        return sum(w.shape[1] for w in self.weights)

    @property
    def method(self) -> str:
        k = len(self.kinds)
        if self.unit == "group":
            return "speaker-cluster bootstrap within folds"
        if self.unit == "utterance":
            why = " (every fold has one test speaker)" if k > 1 else ""
            return f"utterance bootstrap within folds{why}"
        n_utt = self.kinds.count("utterance")
        return f"speaker-cluster bootstrap within folds (utterances in the {n_utt} of {k} folds with one test speaker)"

    def classification(self, t_folds: Sequence[np.ndarray], p_folds: Sequence[np.ndarray], n_classes: int) -> dict[str, np.ndarray]:
        """(n_boot,) resampled mean over folds of UA, WA and macro-F1."""
        total = {name: np.zeros(self.n_boot) for name in CLASSIFICATION_METRICS}
        for t, p, unit, weights in zip(t_folds, p_folds, self.units, self.weights):
            counts = weights @ _unit_confusions(t, p, n_classes, unit, weights.shape[1])
            values = _classification_from_confusion(counts.reshape(self.n_boot, n_classes, n_classes))
            for name in total:
                total[name] += values[name]
        return {name: v / len(self.units) for name, v in total.items()}

    def regression(self, x_folds: Sequence[np.ndarray], y_folds: Sequence[np.ndarray], keys: Sequence[str]) -> dict[str, np.ndarray]:
        """(n_boot,) resampled mean over folds of CCC, Pearson r and MAE per dimension and of mean CCC."""
        total: dict[str, np.ndarray] = {}
        for x_all, y_all, unit, weights in zip(x_folds, y_folds, self.units, self.weights):
            cccs, defined = [], []
            for j, dim in enumerate(keys):
                x, y = x_all[:, j], y_all[:, j]
                keep = np.isfinite(x) & np.isfinite(y)
                shift = float(x[keep].mean()) if keep.any() else 0.0
                stats = np.where(keep[:, None], _regression_moments(np.where(keep, x - shift, 0.0), np.where(keep, y - shift, 0.0)), 0.0)
                units = np.zeros((weights.shape[1], stats.shape[1]))
                np.add.at(units, unit, stats)
                values = _regression_from_moments(weights @ units)
                for name in REGRESSION_METRICS:
                    total[f"{name}_{dim}"] = total.get(f"{name}_{dim}", 0.0) + values[name]
                if keep.any():  # as the point estimate: dimensions without targets are not averaged
                    cccs.append(values["ccc"])
            mean_ccc = np.mean(cccs, axis=0) if cccs else np.full(self.n_boot, np.nan)
            total["mean_ccc"] = total.get("mean_ccc", 0.0) + mean_ccc
        return {name: v / len(self.units) for name, v in total.items()}


def _resample_index_lists(n: int, groups: np.ndarray | None, n_boot: int, rng: np.random.Generator):
    if groups is None:
        for _ in range(n_boot):
            yield rng.integers(0, n, size=n)
        return
    members = [np.flatnonzero(groups == g) for g in range(int(groups.max()) + 1)]
    for _ in range(n_boot):
        chosen = rng.integers(0, len(members), size=len(members))
        yield np.concatenate([members[g] for g in chosen])


def _interval(metric: str, value: float, samples: np.ndarray, alpha: float, n_boot: int,
              grouped: bool | str, n_units: int, method: str = "", n_strata: int = 1) -> ConfidenceInterval:
    finite = samples[np.isfinite(samples)]
    if finite.size:
        low, high = np.quantile(finite, [alpha / 2, 1 - alpha / 2])
    else:
        low = high = math.nan
    unit = grouped if isinstance(grouped, str) else ("group" if grouped else "utterance")
    return ConfidenceInterval(
        metric=metric, value=float(value), low=float(low), high=float(high), alpha=alpha, n_boot=n_boot,
        n_valid=int(finite.size), unit=unit, n_units=n_units, method=method, n_strata=n_strata,
    )


def _check_bootstrap_args(n: int, alpha: float) -> None:
    if n < 1:
        raise ValueError(f"the number of bootstrap resamples must be >= 1, got {n}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")


def _regression_pair(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.asarray(y_true, dtype=np.float64)
    y = np.asarray(y_pred, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D of the same length, got {x.shape} and {y.shape}")
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep], keep


def bootstrap_ci(
    y_true: Any,
    y_pred: Any,
    metric: str | Callable[[np.ndarray, np.ndarray], float],
    n: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    groups: Any = None,
    labels: Any = None,
    strata: Any = None,
    strata_name: str = "strata",
) -> ConfidenceInterval:
    """Percentile bootstrap interval of ``metric`` at level ``1 - alpha``.

    ``metric`` is a name -- ``"ua"``, ``"wa"``, ``"macro_f1"`` (categorical; ``labels`` as in
    :func:`classification_metrics`) or ``"ccc"``, ``"pearson"``, ``"mae"`` (one dimension,
    NaN rows skipped) -- computed for all resamples at once from resampled confusion
    matrices / moments, or any callable ``f(y_true, y_pred) -> float`` (evaluated resample
    by resample: slower). With ``groups`` (e.g. speaker per prediction) whole groups are
    drawn with replacement (cluster bootstrap); with ``strata`` (e.g. test corpus per
    prediction) units are resampled within each stratum, so every stratum keeps its size
    (named ``strata_name`` in the interval's ``method``). Resamples where the metric is undefined
    (e.g. CCC of a constant resample) are left out; ``n_valid`` counts the rest. UA and
    macro-F1 of a resample average over the classes present in that resample, as the point
    estimate does.
    """
    _check_bootstrap_args(n, alpha)
    rng = np.random.default_rng(seed)
    if callable(metric):
        t_arr, p_arr = np.asarray(y_true), np.asarray(y_pred)
        if t_arr.shape[0] != p_arr.shape[0]:
            raise ValueError(f"y_true has {t_arr.shape[0]} rows but y_pred has {p_arr.shape[0]}")
        codes = _groups_codes(groups, t_arr.shape[0])
        value = float(metric(t_arr, p_arr))
        samples = np.array([float(metric(t_arr[i], p_arr[i])) for i in _resample_index_lists(t_arr.shape[0], codes, n, rng)])
        name = getattr(metric, "__name__", "metric")
        n_units = t_arr.shape[0] if codes is None else int(codes.max()) + 1
        return _interval(name, value, samples, alpha, n, codes is not None, n_units)
    if metric in CLASSIFICATION_METRICS:
        t, p, names = _class_inputs(y_true, y_pred, labels)
        codes = _groups_codes(groups, t.shape[0])
        layers = _groups_codes(strata, t.shape[0], "strata")
        c = len(names)
        value = _classification_from_confusion(confusion_matrix(t, p, labels=np.arange(c)))[metric]
        samples = _classification_from_confusion(_resampled_confusions(t, p, c, codes, n, rng, layers))[metric]
        n_units, n_strata = _unit_counts(codes, layers, t.shape[0])
        return _interval(metric, float(value), samples, alpha, n, codes is not None, n_units,
                         _pooled_method(codes is not None, n_strata, strata_name), n_strata)
    if metric in REGRESSION_METRICS:
        x, y, keep = _regression_pair(y_true, y_pred)
        if x.size == 0:
            raise ValueError("no rows with both a target and a prediction")
        codes = layers = None
        for role, values in (("groups", groups), ("strata", strata)):
            if values is not None:
                arr = np.asarray(values)
                if arr.shape != keep.shape:
                    raise ValueError(f"{role} must have one entry per prediction ({keep.size}), got shape {arr.shape}")
                if role == "groups":
                    codes = _groups_codes(arr[keep], x.size)
                else:
                    layers = _groups_codes(arr[keep], x.size, "strata")
        value = {"ccc": concordance_cc, "pearson": _pearson, "mae": lambda a, b: float(np.mean(np.abs(a - b)))}[metric](x, y)
        samples = _regression_from_moments(_resampled_moments(x, y, codes, n, rng, layers))[metric]
        n_units, n_strata = _unit_counts(codes, layers, x.size)
        return _interval(metric, float(value), samples, alpha, n, codes is not None, n_units,
                         _pooled_method(codes is not None, n_strata, strata_name), n_strata)
    known = ", ".join(CLASSIFICATION_METRICS + REGRESSION_METRICS)
    raise ValueError(f"unknown metric {metric!r}; known: {known}, or pass a callable")


# ---------------------------------------------------------------------- public metrics


def evaluate_classification(
    y_true: Any,
    y_pred: Any,
    labels: Any = None,
    *,
    groups: Any = None,
    n_boot: int = 0,
    alpha: float = 0.05,
    seed: int = 0,
    strata: Any = None,
    strata_name: str = "strata",
) -> ClassificationResult:
    """Categorical metrics as a :class:`ClassificationResult`; see the module doc for the rules.

    ``y_true``/``y_pred``: class indices into ``labels`` or class names; ``y_pred`` may also
    be scores (N, C) whose argmax is taken. ``labels``: class names (or a LabelSet) giving
    the order of the confusion matrix; default the sorted union of the values seen.
    ``n_boot > 0`` adds bootstrap intervals for UA, WA and macro-F1 (by ``groups`` if given,
    within ``strata`` if given; see :func:`bootstrap_ci`).
    """
    t, p, names = _class_inputs(y_true, y_pred, labels)
    c = len(names)
    cm = confusion_matrix(t, p, labels=np.arange(c))
    values = _classification_from_confusion(cm)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    per_class = [
        ClassMetrics(
            label=names[i], precision=float(values["precision"][i]), recall=float(values["recall"][i]),
            f1=float(values["f1"][i]), support=int(support[i]), predicted=int(predicted[i]),
        )
        for i in range(c)
    ]
    ci: dict[str, ConfidenceInterval] = {}
    if n_boot > 0:
        _check_bootstrap_args(n_boot, alpha)
        codes = _groups_codes(groups, t.shape[0])
        layers = _groups_codes(strata, t.shape[0], "strata")
        boot = _classification_from_confusion(
            _resampled_confusions(t, p, c, codes, n_boot, np.random.default_rng(seed), layers)
        )
        n_units, n_strata = _unit_counts(codes, layers, t.shape[0])
        method = _pooled_method(codes is not None, n_strata, strata_name)
        for name in CLASSIFICATION_METRICS:
            ci[name] = _interval(name, float(values[name]), boot[name], alpha, n_boot, codes is not None, n_units,
                                 method, n_strata)
    return ClassificationResult(
        labels=names, n=int(t.shape[0]), ua=float(values["ua"]), wa=float(values["wa"]),
        macro_f1=float(values["macro_f1"]), evaluated_classes=[names[i] for i in range(c) if support[i] > 0],
        per_class=per_class, confusion=cm.astype(int).tolist(), ci=ci,
    )


def classification_metrics(y_true: Any, y_pred: Any, labels: Any = None) -> dict[str, Any]:
    """UA, WA, macro-F1, per-class precision/recall/F1/support and the confusion matrix, as a dict.

    The dict is :meth:`ClassificationResult.to_dict` of :func:`evaluate_classification`
    (keys ``ua``, ``wa``, ``macro_f1``, ``per_class``, ``confusion``, ``evaluated_classes``...).
    """
    return evaluate_classification(y_true, y_pred, labels).to_dict()


def _regression_columns(values: Any, dims: Sequence[str] | None, role: str) -> tuple[np.ndarray, list[str]]:
    if isinstance(values, Mapping) or hasattr(values, "columns"):
        keys = list(dims) if dims is not None else [d for d in DIMENSIONS if d in values] or list(values.keys())
        missing = [k for k in keys if k not in values]
        if missing:
            raise ValueError(f"{role} lacks dimensions {missing}")
        return np.column_stack([np.asarray(values[k], dtype=np.float64) for k in keys]), keys
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{role} must be (N,) or (N, D), got shape {arr.shape}")
    keys = list(dims) if dims is not None else list(DIMENSIONS[: arr.shape[1]])
    if len(keys) != arr.shape[1]:
        raise ValueError(f"{role} has {arr.shape[1]} columns but dims names {len(keys)}: {keys}")
    return arr, keys


def evaluate_regression(
    y_true: Any,
    y_pred: Any,
    dims: Sequence[str] | None = None,
    *,
    groups: Any = None,
    n_boot: int = 0,
    alpha: float = 0.05,
    seed: int = 0,
    strata: Any = None,
    strata_name: str = "strata",
) -> RegressionResult:
    """CCC, Pearson r and MAE per dimension as a :class:`RegressionResult`.

    ``y_true``/``y_pred``: arrays (N,) or (N, D) whose columns are ``dims`` (default
    arousal, valence, dominance, in that order), or mappings/DataFrames keyed by dimension.
    Rows where a target or a prediction is NaN are skipped for that dimension.
    ``n_boot > 0`` adds bootstrap intervals (keys ``"ccc_arousal"``, ...).
    """
    x_all, keys = _regression_columns(y_true, dims, "y_true")
    y_all, keys_pred = _regression_columns(y_pred, keys, "y_pred")
    if x_all.shape != y_all.shape:
        raise ValueError(f"y_true has shape {x_all.shape} but y_pred has {y_all.shape}")
    results: dict[str, DimensionMetrics] = {}
    ci: dict[str, ConfidenceInterval] = {}
    if n_boot > 0:
        _check_bootstrap_args(n_boot, alpha)
    group_values = None if groups is None else np.asarray(groups)
    if group_values is not None and group_values.shape != (x_all.shape[0],):
        raise ValueError(f"groups must have one entry per row ({x_all.shape[0]}), got shape {group_values.shape}")
    strata_values = None if strata is None else np.asarray(strata)
    if strata_values is not None and strata_values.shape != (x_all.shape[0],):
        raise ValueError(f"strata must have one entry per row ({x_all.shape[0]}), got shape {strata_values.shape}")
    for j, dim in enumerate(keys):
        x, y, keep = _regression_pair(x_all[:, j], y_all[:, j])
        if x.size == 0:
            results[dim] = DimensionMetrics(ccc=math.nan, pearson=math.nan, mae=math.nan, n=0)
            continue
        results[dim] = DimensionMetrics(
            ccc=concordance_cc(x, y), pearson=_pearson(x, y), mae=float(np.mean(np.abs(x - y))), n=int(x.size)
        )
        if n_boot > 0:
            codes = None if group_values is None else _groups_codes(group_values[keep], x.size)
            layers = None if strata_values is None else _groups_codes(strata_values[keep], x.size, "strata")
            rng = np.random.default_rng([seed, j])
            boot = _regression_from_moments(_resampled_moments(x, y, codes, n_boot, rng, layers))
            n_units, n_strata = _unit_counts(codes, layers, x.size)
            method = _pooled_method(codes is not None, n_strata, strata_name)
            for name in REGRESSION_METRICS:
                ci[f"{name}_{dim}"] = _interval(
                    f"{name}_{dim}", getattr(results[dim], name), boot[name], alpha, n_boot, codes is not None, n_units,
                    method, n_strata,
                )
    cccs = [m.ccc for m in results.values() if m.n > 0]  # a dimension without any targets is not averaged
    return RegressionResult(dims=results, mean_ccc=float(np.mean(cccs)) if cccs else math.nan, ci=ci)


def regression_metrics(y_true: Any, y_pred: Any, dims: Sequence[str] | None = None) -> dict[str, Any]:
    """Per dimension ``{"ccc", "pearson", "mae", "n"}`` under ``"dims"``, plus ``"mean_ccc"``."""
    return evaluate_regression(y_true, y_pred, dims).to_dict()


# ----------------------------------------------------------------------------- folds


class FoldPredictions(BaseModel):
    """The test predictions of one fold. ``groups`` (speakers) enable the cluster bootstrap;
    ``strata`` (e.g. the test corpus of each row) are kept whole by the pooled bootstrap."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    y_true: Any
    y_pred: Any
    name: str = ""
    groups: Any = None
    strata: Any = None


def _as_fold(item: Any, index: int) -> FoldPredictions:
    if isinstance(item, FoldPredictions):
        fold = item
    elif isinstance(item, Mapping):
        fold = FoldPredictions(**item)
    elif isinstance(item, (tuple, list)) and len(item) in (2, 3):
        fold = FoldPredictions(y_true=item[0], y_pred=item[1], groups=item[2] if len(item) == 3 else None)
    else:
        raise TypeError(f"fold {index}: expected FoldPredictions, a mapping or (y_true, y_pred[, groups]), got {type(item)}")
    if not fold.name:
        fold = fold.model_copy(update={"name": f"fold{index}"})
    return fold


def aggregate_folds(
    fold_results: Sequence[Any],
    labels: Any = None,
    *,
    task: Literal["classification", "regression"] | None = None,
    dims: Sequence[str] | None = None,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    strata_name: str = "strata",
) -> FoldAggregate:
    """Summarise cross-validation folds two ways, labelled as such, each with an interval.

    ``mean_of_folds``: mean and sample std (ddof=1) over folds of each fold's metric, and
    (``n_boot > 0``) a percentile interval of the mean from a bootstrap within folds: every
    fold's test speakers (utterances where a fold has fewer than two speakers, or without
    ``groups``) resampled independently, each fold's metric recomputed, then averaged.
    ``pooled``: the metrics of all folds' predictions concatenated, with ``n_boot``
    percentile bootstrap intervals (by group when every fold gives ``groups``; within
    ``strata`` when every fold gives them).
    ``fold_results``: :class:`FoldPredictions`, mappings with ``y_true``/``y_pred``
    (/``groups``/``name``) or ``(y_true, y_pred[, groups])`` tuples. The task is categorical
    when ``labels`` are given, else inferred (float targets -> regression).
    """
    folds = [_as_fold(item, i) for i, item in enumerate(fold_results)]
    if not folds:
        raise ValueError("aggregate_folds needs at least one fold")
    if task is None:
        first = np.asarray(folds[0].y_true)
        task = "classification" if labels is not None or first.dtype.kind not in "f" else "regression"
    with_groups = all(f.groups is not None for f in folds)
    with_strata = all(f.strata is not None for f in folds)
    fold_groups = [_groups_codes(f.groups, len(np.asarray(f.y_true)), "fold groups") if with_groups else None for f in folds]
    fold_boot: dict[str, np.ndarray] = {}
    resampler = None
    if n_boot > 0:
        _check_bootstrap_args(n_boot, alpha)
        resampler = _FoldResampler(fold_groups, [len(np.asarray(f.y_true)) for f in folds], n_boot, seed)
    if task == "classification":
        names = _label_names(labels) or None
        if names is None:
            seen = set()
            for f in folds:
                seen |= set(np.asarray(f.y_true).tolist()) | set(np.asarray(f.y_pred).tolist())
            names = sorted(seen)
        per_fold: list = [evaluate_classification(f.y_true, f.y_pred, names) for f in folds]
        # Pool as class indices so names and indices may be mixed across folds.
        t = np.concatenate([_to_indices(f.y_true, names, "y_true") for f in folds])
        p = np.concatenate([_to_indices(f.y_pred, names, "y_pred") for f in folds])
        g = np.concatenate([np.asarray(f.groups).astype(str) for f in folds]) if with_groups else None
        st = np.concatenate([np.asarray(f.strata).astype(str) for f in folds]) if with_strata else None
        pooled: Any = evaluate_classification(t, p, names, groups=g, n_boot=n_boot, alpha=alpha, seed=seed,
                                              strata=st, strata_name=strata_name)
        if resampler is not None:
            fold_boot = resampler.classification(
                [_to_indices(f.y_true, names, "y_true") for f in folds],
                [_to_indices(f.y_pred, names, "y_pred") for f in folds], len(names))
    elif task == "regression":
        per_fold = [evaluate_regression(f.y_true, f.y_pred, dims) for f in folds]
        keys = list(per_fold[0].dims)
        t = np.concatenate([_regression_columns(f.y_true, keys, "y_true")[0] for f in folds])
        p = np.concatenate([_regression_columns(f.y_pred, keys, "y_pred")[0] for f in folds])
        g = np.concatenate([np.asarray(f.groups).astype(str) for f in folds]) if with_groups else None
        st = np.concatenate([np.asarray(f.strata).astype(str) for f in folds]) if with_strata else None
        pooled = evaluate_regression(t, p, keys, groups=g, n_boot=n_boot, alpha=alpha, seed=seed,
                                     strata=st, strata_name=strata_name)
        if resampler is not None:
            fold_boot = resampler.regression([_regression_columns(f.y_true, keys, "y_true")[0] for f in folds],
                                             [_regression_columns(f.y_pred, keys, "y_pred")[0] for f in folds], keys)
    else:
        raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
    summaries = [r.summary() for r in per_fold]
    mean_of_folds = {}
    for name in summaries[0]:
        values = np.array([s[name] for s in summaries], dtype=np.float64)
        std = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
        mean = float(np.mean(values))
        ci = None
        if resampler is not None and name in fold_boot:
            ci = _interval(name, mean, fold_boot[name], alpha, n_boot, resampler.unit, resampler.n_units,
                           resampler.method, len(folds))
        mean_of_folds[name] = FoldStat(mean=mean, std=std, values=values.tolist(), ci=ci)
    return FoldAggregate(
        task=task, fold_names=[f.name for f in folds], mean_of_folds=mean_of_folds, pooled=pooled, folds=per_fold
    )


def paired_difference(
    folds_a: Sequence[Any],
    folds_b: Sequence[Any],
    labels: Any,
    metric: str = "ua",
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> ConfidenceInterval:
    """Paired bootstrap interval of (mean of folds of A) - (mean of folds of B).

    Both systems must be scored on the same folds with the same rows in the same order
    (same ``y_true``; ``groups`` -- speakers -- taken from A). Every resample draws the same
    speakers (utterances in folds with one test speaker) for both, within each fold, so the
    interval reflects only how the two differ on the same data: A against itself gives
    exactly 0 with a zero-width interval. ``metric``: ``"ua"``, ``"wa"`` or ``"macro_f1"``.
    """
    if metric not in CLASSIFICATION_METRICS:
        raise ValueError(f"paired_difference scores {CLASSIFICATION_METRICS}, not {metric!r}")
    _check_bootstrap_args(n_boot, alpha)
    a = [_as_fold(f, i) for i, f in enumerate(folds_a)]
    b = [_as_fold(f, i) for i, f in enumerate(folds_b)]
    if len(a) != len(b) or not a:
        raise ValueError(f"paired folds must match one to one, got {len(a)} and {len(b)}")
    names = _label_names(labels)
    t_a = [_to_indices(f.y_true, names, "y_true") for f in a]
    t_b = [_to_indices(f.y_true, names, "y_true") for f in b]
    for i, (x, y) in enumerate(zip(t_a, t_b)):
        if x.shape != y.shape or not np.array_equal(x, y):
            raise ValueError(f"fold {i}: the two systems were not scored on the same rows (true labels differ)")
    p_a = [_to_indices(f.y_pred, names, "y_pred") for f in a]
    p_b = [_to_indices(f.y_pred, names, "y_pred") for f in b]
    with_groups = all(f.groups is not None for f in a)
    groups = [_groups_codes(f.groups, t.size, "fold groups") if with_groups else None for f, t in zip(a, t_a)]
    resampler = _FoldResampler(groups, [t.size for t in t_a], n_boot, seed)
    c = len(names)
    diff = resampler.classification(t_a, p_a, c)[metric] - resampler.classification(t_b, p_b, c)[metric]

    def point(t_folds: list[np.ndarray], p_folds: list[np.ndarray]) -> float:
        return float(np.mean([_classification_from_confusion(np.bincount(t * c + p, minlength=c * c).reshape(c, c))[metric]
                              for t, p in zip(t_folds, p_folds)]))

    value = point(t_a, p_a) - point(t_b, p_b)
    return _interval(f"{metric}_difference", value, diff, alpha, n_boot, resampler.unit, resampler.n_units,
                     "paired " + resampler.method, len(a))
