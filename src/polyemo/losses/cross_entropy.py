"""Cross-entropy, optionally label-smoothed, and its class-weighted form."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from polyemo.losses import LOSSES
from polyemo.losses.base import ClassificationLoss, Reduction, WeightScheme, class_weights, smoothed_nll


def _check_smoothing(label_smoothing: float) -> float:
    if not 0 <= label_smoothing < 1:
        raise ValueError(f"label_smoothing must lie in [0, 1), got {label_smoothing}")
    return float(label_smoothing)


@LOSSES.register("ce", "cross_entropy")
class CrossEntropyLoss(ClassificationLoss):
    """-log p_y; with ``label_smoothing`` eps: (1 - eps) * -log p_y + eps * mean_c -log p_c,
    the mean taken over the classes the row's mask allows (all classes without a mask).
    ``weight``: optional explicit per-class weights (``weighted_ce`` derives them from counts)."""

    def __init__(
        self,
        label_smoothing: float = 0.0,
        weight: Sequence[float] | np.ndarray | torch.Tensor | None = None,
        ignore_index: int = -1,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__(ignore_index=ignore_index, reduction=reduction, weight=weight)
        self.label_smoothing = _check_smoothing(label_smoothing)

    def row_losses(self, log_probs, targets, mask):
        return smoothed_nll(log_probs, targets, mask, self.label_smoothing)


@LOSSES.register("weighted_ce", "wce", "class_weighted_ce")
class WeightedCrossEntropyLoss(CrossEntropyLoss):
    """Cross-entropy with per-class weights from the training counts (``class_weights``);
    the mean is weighted: sum(w_y l) / sum(w_y)."""

    def __init__(
        self,
        class_counts: Sequence[float] | np.ndarray | torch.Tensor,
        scheme: WeightScheme = "inverse",
        beta: float = 0.999,
        label_smoothing: float = 0.0,
        ignore_index: int = -1,
        reduction: Reduction = "mean",
    ) -> None:
        ClassificationLoss.__init__(
            self, ignore_index=ignore_index, reduction=reduction, weight=class_weights(class_counts, scheme, beta)
        )
        self.label_smoothing = _check_smoothing(label_smoothing)
        self.scheme = scheme
