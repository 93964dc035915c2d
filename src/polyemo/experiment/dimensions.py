"""Dimensional targets of an experiment: which values, where they come from, how they are scored.

``target: dimensions`` (with a ``dimensions:`` block) trains arousal / valence / dominance
(any of them). The split protocols still stratify on a categorical column (``classes``:
``label`` or ``arousal_level``), which also feeds the head's categorical output. Sources of
the values (:class:`DimensionsSpec`):

- ``columns``: the manifest's own ``arousal``/``valence``/``dominance`` floats (MSP-Podcast, IEMOCAP);
- ``arousal_level``: BAVED's low / neutral / high arousal levels as an ORDINAL arousal target
  1 / 2 / 3 (scale [1, 3]); the only real dimensional data among the shared corpora;
- ``proxy``: a category -> dimension table given in the configuration (``proxy``, with its
  published source in ``proxy_source``), e.g. from valence/arousal/dominance norms of
  emotion words. Such targets are a PROXY, not ratings: every headline and table says so.

Predictions carry ``true_<attribute>`` and ``pred_<attribute>`` on the corpus scale
(:func:`add_dimension_columns`); :func:`score_dimensions` scores CCC, Pearson r and MAE per
attribute and their mean, per fold, mean of folds and pooled, with the same speaker-cluster
bootstrap intervals as the categorical scores.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

DIMENSIONS = ("arousal", "valence", "dominance")
#: BAVED's arousal levels as ordinal values
AROUSAL_ORDINAL = {"low": 1.0, "neutral": 2.0, "high": 3.0}
TARGET_COLUMN = "target"  # the experiment manifest's class column (polyemo.experiment.data)


class DimensionsSpec(BaseModel):
    """The ``dimensions:`` block of an experiment (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    attributes: list[Literal["arousal", "valence", "dominance"]] = Field(default_factory=lambda: list(DIMENSIONS))
    source: Literal["columns", "arousal_level", "proxy"] = "columns"
    #: the categorical column the folds are stratified on (default: arousal_level for that source, else label)
    classes: Literal["label", "arousal_level"] | None = None
    #: the corpus scale [low, high] of the values (default: [1, 3] for arousal_level, the proxy table's range)
    scale: tuple[float, float] | None = None
    #: proxy: class -> {attribute: value}
    proxy: dict[str, dict[str, float]] | None = None
    #: proxy: where the table's values come from (a citation)
    proxy_source: str | None = None

    @model_validator(mode="after")
    def _check(self) -> DimensionsSpec:
        if not self.attributes or len(set(self.attributes)) != len(self.attributes):
            raise ValueError(f"dimensions.attributes: give distinct attributes of {DIMENSIONS}")
        if self.source == "arousal_level" and self.attributes != ["arousal"]:
            raise ValueError("dimensions: source arousal_level gives arousal only; set attributes: [arousal]")
        if self.source == "proxy":
            if not self.proxy or not self.proxy_source:
                raise ValueError("dimensions: source proxy needs a 'proxy' table (class -> {attribute: value}) "
                                 "and its published 'proxy_source'")
            missing = [(c, a) for c, values in self.proxy.items() for a in self.attributes if a not in values]
            if missing:
                raise ValueError(f"dimensions.proxy: no value for {missing[:3]}")
        elif self.proxy is not None:
            raise ValueError("dimensions.proxy applies to source: proxy")
        if self.scale is not None and not self.scale[0] < self.scale[1]:
            raise ValueError(f"dimensions.scale must be [low, high] with low < high, got {list(self.scale)}")
        return self

    @property
    def is_proxy(self) -> bool:
        return self.source == "proxy"

    def class_column(self) -> str:
        return self.classes or ("arousal_level" if self.source == "arousal_level" else "label")

    def corpus_scale(self) -> tuple[float, float] | None:
        if self.scale is not None:
            return (float(self.scale[0]), float(self.scale[1]))
        if self.source == "arousal_level":
            return (1.0, 3.0)
        if self.source == "proxy":
            values = [v[a] for v in self.proxy.values() for a in self.attributes]
            return (float(min(values)), float(max(values)))
        return None

    def describe(self) -> str:
        if self.source == "arousal_level":
            return "ordinal arousal (BAVED levels low/neutral/high = 1/2/3)"
        if self.source == "proxy":
            return f"PROXY dimensions from categories ({self.proxy_source})"
        return "rated dimensions (manifest columns)"


def expand_target(data: dict[str, Any]) -> dict[str, Any]:
    """``target: dimensions`` -> the categorical class column as ``target``, the head's
    attributes and scale from the ``dimensions`` block (a raw experiment mapping)."""
    if data.get("target") != "dimensions":
        if data.get("dimensions") is not None:
            raise ValueError("'dimensions' applies to target: dimensions")
        head = data.get("head")
        if (head if isinstance(head, str) else (head or {}).get("name")) in ("dimensional", "avd"):
            raise ValueError("head dimensional needs target: dimensions (and a dimensions block)")
        return data
    if data.get("dimensions") is None:
        raise ValueError("target: dimensions needs a 'dimensions' block (attributes, source)")
    spec = DimensionsSpec(**data["dimensions"]) if isinstance(data["dimensions"], dict) else data["dimensions"]
    data = {**data, "target": spec.class_column(), "dimensions": spec.model_dump(mode="json", exclude_none=True)}
    head = data.get("head")
    head = {"name": head} if isinstance(head, str) else dict(head or {"name": "dimensional"})
    if head.get("name") in ("dimensional", "avd"):
        params = dict(head.get("params") or {})
        params.setdefault("attributes", list(spec.attributes))
        scale = spec.corpus_scale()
        if scale is not None:
            params.setdefault("scale", list(scale))
        head["params"] = params
    data["head"] = head
    return data


def dimension_targets(rows: pd.DataFrame, spec: DimensionsSpec | dict[str, Any] | None) -> np.ndarray | None:
    """(N, 3) arousal, valence, dominance of ``rows`` under ``spec`` (NaN: unknown or not trained)."""
    if spec is None:
        return None
    spec = spec if isinstance(spec, DimensionsSpec) else DimensionsSpec(**spec)
    out = np.full((len(rows), len(DIMENSIONS)), np.nan)
    for attribute in spec.attributes:
        j = DIMENSIONS.index(attribute)
        if spec.source == "columns":
            if attribute in rows.columns:
                out[:, j] = pd.to_numeric(rows[attribute], errors="coerce").to_numpy(np.float64)
        elif spec.source == "arousal_level":
            levels = rows["arousal_level"].astype("string").str.strip().str.lower()
            out[:, j] = [AROUSAL_ORDINAL.get(v, np.nan) if isinstance(v, str) else np.nan for v in levels]
        else:
            classes = rows[TARGET_COLUMN].astype(object)
            out[:, j] = [spec.proxy.get(c, {}).get(attribute, np.nan) if isinstance(c, str) else np.nan for c in classes]
    return out


def add_dimension_columns(frame: pd.DataFrame, outputs: dict[str, np.ndarray], true_avd: np.ndarray | None,
                          spec: DimensionsSpec | dict[str, Any] | None,
                          true_gender: np.ndarray | None = None) -> pd.DataFrame:
    """``true_<a>`` and ``pred_<a>`` per trained attribute (corpus scale), where the model predicts
    them; ``true_gender``/``pred_gender`` (f/m, NA unknown) where it has a gender output."""
    if "gender" in outputs:
        frame["pred_gender"] = np.where(np.asarray(outputs["gender"]).argmax(1) == 1, "m", "f")
        codes = np.full(len(frame), -1) if true_gender is None else np.asarray(true_gender)
        frame["true_gender"] = pd.Series(np.where(codes == 1, "m", np.where(codes == 0, "f", None)), dtype="string")
    if spec is None or "avd" not in outputs:
        return frame
    spec = spec if isinstance(spec, DimensionsSpec) else DimensionsSpec(**spec)
    predicted = np.asarray(outputs["avd"], np.float64)
    for attribute in spec.attributes:
        j = DIMENSIONS.index(attribute)
        frame[f"true_{attribute}"] = np.nan if true_avd is None else np.asarray(true_avd, np.float64)[:, j]
        frame[f"pred_{attribute}"] = predicted[:, j]
    return frame


def predicted_attributes(predictions: pd.DataFrame) -> list[str]:
    return [a for a in DIMENSIONS if f"pred_{a}" in predictions.columns and f"true_{a}" in predictions.columns]


def score_dimensions(predictions: dict[str, pd.DataFrame], names: list[str], *, by_speaker: bool, n_boot: int,
                     alpha: float, seed: int, spec: DimensionsSpec | dict[str, Any] | None = None):
    """Per-attribute CCC / Pearson / MAE: (FoldAggregate, headline text) or None without dimensional predictions."""
    from polyemo.metrics import FoldPredictions, aggregate_folds

    attributes = predicted_attributes(predictions[names[0]]) if names else []
    if not attributes:
        return None
    folds = [FoldPredictions(
        y_true=predictions[n][[f"true_{a}" for a in attributes]].to_numpy(np.float64),
        y_pred=predictions[n][[f"pred_{a}" for a in attributes]].to_numpy(np.float64), name=n,
        groups=predictions[n]["speaker"].astype(str).tolist() if by_speaker else None,
        strata=predictions[n]["corpus"].astype(str).tolist()) for n in names]
    aggregate = aggregate_folds(folds, task="regression", dims=attributes, n_boot=n_boot, alpha=alpha, seed=seed,
                                strata_name="test corpora")
    spec = spec if spec is None or isinstance(spec, DimensionsSpec) else DimensionsSpec(**spec)
    line = dimension_headline(aggregate, attributes, spec)
    accuracy = gender_accuracy(pd.concat([predictions[n] for n in names]))
    if accuracy is not None:
        line += f"; gender (auxiliary) accuracy {accuracy[0] * 100:.1f} % of {accuracy[1]} clips"
    return aggregate, line


def gender_accuracy(predictions: pd.DataFrame) -> tuple[float, int] | None:
    """Accuracy of the auxiliary gender output over rows with a known gender (None without one)."""
    if "pred_gender" not in predictions.columns or "true_gender" not in predictions.columns:
        return None
    known = predictions["true_gender"].astype("string").isin(["f", "m"])
    if not known.any():
        return None
    right = predictions.loc[known, "pred_gender"].astype(str) == predictions.loc[known, "true_gender"].astype(str)
    return float(right.mean()), int(known.sum())


def _num(value: float) -> str:
    return "nan" if value is None or not math.isfinite(value) else f"{value:.3f}"


def dimension_headline(aggregate, attributes: list[str], spec: DimensionsSpec | None) -> str:
    """``CCC (pooled) arousal 0.612 [0.571, 0.650], ...; mean CCC ...``; proxies say so."""
    pooled = aggregate.pooled
    parts = []
    for a in attributes:
        ci = pooled.ci.get(f"ccc_{a}")
        fold = aggregate.mean_of_folds.get(f"ccc_{a}")
        interval = f" [{_num(ci.low)}, {_num(ci.high)}]" if ci is not None else ""
        parts.append(f"{a} {_num(pooled.dims[a].ccc)}{interval} (mean of folds {_num(fold.mean if fold else math.nan)}; "
                     f"Pearson {_num(pooled.dims[a].pearson)}, MAE {_num(pooled.dims[a].mae)})")
    what = spec.describe() if spec is not None else "dimensions"
    return f"CCC pooled {'; '.join(parts)}; mean CCC {_num(pooled.mean_ccc)} — {what}"


def dimension_markdown(aggregate, spec: DimensionsSpec | None) -> str:
    """The pooled table (CCC, Pearson, MAE per attribute with intervals), labelled proxy where it is."""
    title = "## Dimensions" + (" (PROXY targets)" if spec is not None and spec.is_proxy else "")
    lines = [title, "", spec.describe() if spec is not None else "", "", "Pooled over all test predictions:", "",
             aggregate.pooled.to_markdown(), "", "Mean of folds:", "", "| metric | mean | std | interval |",
             "|---|---:|---:|---|"]
    for name, stat in aggregate.mean_of_folds.items():
        interval = f"[{_num(stat.ci.low)}, {_num(stat.ci.high)}]" if stat.ci is not None else ""
        lines.append(f"| {name} | {_num(stat.mean)} | {_num(stat.std)} | {interval} |")
    return "\n".join(lines) + "\n"
