"""Concordance loss for dimensional emotion (arousal, valence, dominance)."""

from __future__ import annotations

import torch
from torch import nn

from polyemo.losses import LOSSES


@LOSSES.register("ccc", "concordance")
class CCCLoss(nn.Module):
    """``1 - CCC`` per dimension, averaged over dimensions; predictions and targets (N, D) or (N,).

    CCC = 2 cov / (var_t + var_p + (mean_t - mean_p)^2) with population moments over the
    batch. NaN targets are ignored (their predictions get no gradient); a dimension with
    fewer than 2 targets in the batch is left out; with none left the loss is 0.
    ``eps`` keeps the denominator positive for constant batches.
    """

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = float(eps)

    def forward(self, predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        targets = torch.as_tensor(targets, dtype=predictions.dtype, device=predictions.device)
        if predictions.shape != targets.shape or predictions.ndim not in (1, 2):
            raise ValueError(
                f"CCCLoss: predictions and targets must both be (N,) or (N, D), got "
                f"{tuple(predictions.shape)} and {tuple(targets.shape)}"
            )
        if predictions.ndim == 1:
            predictions, targets = predictions[:, None], targets[:, None]
        losses = []
        for d in range(predictions.shape[1]):
            valid = torch.isfinite(targets[:, d])
            if int(valid.sum()) < 2:
                continue
            p = predictions[valid, d].float()
            t = targets[valid, d].float()
            mp, mt = p.mean(), t.mean()
            vp, vt = ((p - mp) ** 2).mean(), ((t - mt) ** 2).mean()
            cov = ((p - mp) * (t - mt)).mean()
            ccc = 2 * cov / (vp + vt + (mp - mt) ** 2 + self.eps)
            losses.append(1.0 - ccc)
        if not losses:
            return predictions.sum() * 0.0
        return torch.stack(losses).mean()
