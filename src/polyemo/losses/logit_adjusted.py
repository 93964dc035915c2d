"""Prior-aware losses for imbalanced classes: logit-adjusted cross-entropy (Menon et al.,
ICLR 2021) and the vector-scaling loss (Kini et al., NeurIPS 2021).

Both change the logits only inside the loss during training; at prediction time the model's
raw logits are used as they are (the adjustment has already shaped them towards balanced
error). For a model trained with plain cross-entropy use ``posthoc_logit_adjustment``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from polyemo.losses import LOSSES
from polyemo.losses.base import ClassificationLoss, Reduction, WeightScheme, class_weights, nll, positive_priors


def log_prior_offsets(priors, tau: float, what: str) -> np.ndarray:
    """``tau * log(prior)`` per class, float64; refuses classes with prior 0."""
    return float(tau) * np.log(positive_priors(priors, what))


@LOSSES.register("logit_adjusted", "la", "logit_adjustment")
class LogitAdjustedLoss(ClassificationLoss):
    """Cross-entropy on ``logits + tau * log(prior)``: rare classes must win by a larger
    margin, which makes the unadjusted logits Fisher-consistent for balanced error."""

    def __init__(
        self,
        class_counts: Sequence[float] | np.ndarray | torch.Tensor,
        tau: float = 1.0,
        ignore_index: int = -1,
        reduction: Reduction = "mean",
    ) -> None:
        offsets = log_prior_offsets(class_counts, tau, "the logit-adjusted loss")
        super().__init__(ignore_index=ignore_index, reduction=reduction, n_classes=len(offsets))
        self.tau = float(tau)
        self.register_buffer("offsets", torch.as_tensor(offsets, dtype=torch.float32))

    def adjust_logits(self, logits):
        return logits + self.offsets

    def row_losses(self, log_probs, targets, mask):
        return nll(log_probs, targets)


@LOSSES.register("vs", "vector_scaling")
class VSLoss(ClassificationLoss):
    """Vector-scaling loss: cross-entropy on ``Delta_c * z_c + iota_c`` with the multiplicative
    ``Delta_c = (n_c / n_max)^gamma`` and the additive ``iota_c = tau * log(prior_c)``;
    optional class weights (``scheme``) give its weighted form. ``gamma = tau = 0`` is CE."""

    def __init__(
        self,
        class_counts: Sequence[float] | np.ndarray | torch.Tensor,
        gamma: float = 0.2,
        tau: float = 1.0,
        scheme: WeightScheme | None = None,
        beta: float = 0.999,
        ignore_index: int = -1,
        reduction: Reduction = "mean",
    ) -> None:
        if gamma < 0:
            raise ValueError(f"VS gamma must be >= 0, got {gamma}")
        priors = positive_priors(class_counts, "the VS loss")
        counts = np.asarray(class_counts.detach().cpu() if isinstance(class_counts, torch.Tensor) else class_counts, dtype=np.float64)
        weight = None if scheme in (None, "none") else class_weights(counts, scheme, beta)
        super().__init__(ignore_index=ignore_index, reduction=reduction, weight=weight, n_classes=len(priors))
        self.gamma, self.tau = float(gamma), float(tau)
        self.register_buffer("scales", torch.as_tensor((counts / counts.max()) ** gamma, dtype=torch.float32))
        self.register_buffer("offsets", torch.as_tensor(tau * np.log(priors), dtype=torch.float32))

    def adjust_logits(self, logits):
        return logits * self.scales + self.offsets

    def row_losses(self, log_probs, targets, mask):
        return nll(log_probs, targets)
