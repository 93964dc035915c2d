"""Focal loss (Lin et al., ICCV 2017) and its class-weighted ("alpha-balanced") form."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from polyemo.losses import LOSSES
from polyemo.losses.base import ClassificationLoss, Reduction, WeightScheme, class_weights, nll

# 1 - p_t is floored here before the power: d/dx x^gamma is infinite at 0 for gamma < 1,
# and 0 * inf would turn the gradient of a perfectly classified row into NaN.
_TINY = 1e-12


@LOSSES.register("focal")
class FocalLoss(ClassificationLoss):
    """-(1 - p_y)^gamma log p_y: down-weights rows the model already gets right.
    ``gamma = 0`` is cross-entropy. ``weight``: optional explicit per-class weights."""

    def __init__(
        self,
        gamma: float = 2.0,
        weight: Sequence[float] | np.ndarray | torch.Tensor | None = None,
        ignore_index: int = -1,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__(ignore_index=ignore_index, reduction=reduction, weight=weight)
        if gamma < 0:
            raise ValueError(f"focal gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)

    def row_losses(self, log_probs, targets, mask):
        loss = nll(log_probs, targets)
        if self.gamma == 0:
            return loss
        one_minus_p = (-torch.expm1(-loss)).clamp(min=_TINY)  # 1 - p_y, precise when p_y ~ 1
        return one_minus_p.pow(self.gamma) * loss


@LOSSES.register("weighted_focal", "focal_weighted")
class WeightedFocalLoss(FocalLoss):
    """Focal loss with per-class weights alpha_y from the training counts (``class_weights``);
    the mean is weighted: sum(alpha_y l) / sum(alpha_y)."""

    def __init__(
        self,
        class_counts: Sequence[float] | np.ndarray | torch.Tensor,
        gamma: float = 2.0,
        scheme: WeightScheme = "inverse",
        beta: float = 0.999,
        ignore_index: int = -1,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__(gamma=gamma, ignore_index=ignore_index, reduction=reduction,
                         weight=class_weights(class_counts, scheme, beta))
        self.scheme = scheme
