"""Thin adapters between the trainer and the loss and metric modules."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from polyemo.heads.base import EmotionLoss


def build_emotion_loss(name: str, class_counts: np.ndarray, params: dict[str, Any],
                       label_smoothing: float = 0.0) -> EmotionLoss:
    """``loss(logits, targets, masks)`` from :data:`polyemo.losses.LOSSES`.

    ``class_counts`` are the training rows per class (for weighted and prior-based losses);
    ``label_smoothing`` goes to the losses that take it (``ce``, ``weighted_ce``).
    """
    from polyemo.losses import build_loss

    options = dict(params)
    if label_smoothing:
        options["label_smoothing"] = label_smoothing
    try:
        return build_loss(name, class_counts=class_counts, **options)
    except TypeError as error:
        raise ValueError(f"training config: {error}") from error


def classification_scores(y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[Any]) -> dict[str, Any]:
    """Metrics of labelled rows (-1 rows left out) via :func:`polyemo.metrics.classification_metrics`."""
    from polyemo.metrics import classification_metrics

    y_true = np.asarray(y_true)
    keep = y_true >= 0
    if not keep.any():
        raise ValueError("no labelled rows to score")
    return classification_metrics(y_true[keep], np.asarray(y_pred)[keep], list(class_names))
