"""Shared machinery of the classification losses: class statistics, masks, reduction.

Every classification loss takes logits (N, C), integer targets (N,) where ``ignore_index``
(-1) marks rows without a label, and optionally a boolean class mask (N, C): True where the
row's corpus can produce the class (``polyemo.labels.row_masks``). Masked classes get a
logit of -inf before the softmax, so their probability is exactly 0: the loss neither
rewards nor penalises whatever the model outputs for them and their gradient is 0 (as in
FunASR's emotion2vec label masking). A row whose own target is masked is an error.

With class weights, ``reduction="mean"`` is the weighted mean sum(w_y l) / sum(w_y), the
convention of ``torch.nn.functional.cross_entropy``, so weights change the balance between
classes but not the scale of the loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch import nn

Reduction = Literal["mean", "sum", "none"]
WeightScheme = Literal["none", "inverse", "inverse_sqrt", "effective"]
WEIGHT_SCHEMES: tuple[str, ...] = ("none", "inverse", "inverse_sqrt", "effective")


def _counts_array(counts: Sequence[float] | np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(counts, torch.Tensor):
        counts = counts.detach().cpu().numpy()
    arr = np.asarray(counts, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"class counts must be a non-empty 1-D sequence, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"class counts must be finite and non-negative, got {arr.tolist()}")
    if arr.sum() <= 0:
        raise ValueError("class counts are all zero")
    return arr


def class_priors(counts: Sequence[float] | np.ndarray | torch.Tensor, smoothing: float = 0.0) -> np.ndarray:
    """Training class frequencies ``(n_c + smoothing) / sum``, float64 (C,).

    A class without training examples has prior 0 unless ``smoothing > 0``; the
    prior-based losses (logit adjustment, VS) refuse such priors, as log 0 = -inf.
    """
    if smoothing < 0:
        raise ValueError(f"smoothing must be >= 0, got {smoothing}")
    arr = _counts_array(counts) + smoothing
    return arr / arr.sum()


def positive_priors(counts_or_priors: Sequence[float] | np.ndarray | torch.Tensor, what: str) -> np.ndarray:
    priors = class_priors(counts_or_priors)
    empty = np.flatnonzero(priors <= 0)
    if empty.size:
        raise ValueError(
            f"{what} needs every class in the training data, but classes {empty.tolist()} have no examples: "
            "drop them from the label set or pass smoothed priors (class_priors(counts, smoothing=1))"
        )
    return priors


def class_weights(
    counts: Sequence[float] | np.ndarray | torch.Tensor,
    scheme: WeightScheme = "inverse",
    beta: float = 0.999,
) -> np.ndarray:
    """Per-class loss weights from training class counts, float64 (C,).

    Schemes: ``"inverse"`` w_c ∝ 1/n_c; ``"inverse_sqrt"`` w_c ∝ 1/sqrt(n_c);
    ``"effective"`` w_c ∝ (1 - beta) / (1 - beta^n_c), the inverse "effective number of
    samples" (Cui et al., CVPR 2019; beta -> 0 gives equal weights, beta -> 1 inverse
    frequency); ``"none"`` equal weights. Weights are normalised to mean 1 over the classes
    that have examples; classes without examples get weight 0.
    """
    arr = _counts_array(counts)
    present = arr > 0
    raw = np.zeros_like(arr)
    if scheme == "none":
        raw[present] = 1.0
    elif scheme == "inverse":
        raw[present] = 1.0 / arr[present]
    elif scheme == "inverse_sqrt":
        raw[present] = 1.0 / np.sqrt(arr[present])
    elif scheme == "effective":
        if not 0 <= beta < 1:
            raise ValueError(f"beta must lie in [0, 1), got {beta}")
        raw[present] = (1.0 - beta) / (1.0 - np.power(beta, arr[present]))
    else:
        raise ValueError(f"unknown class weight scheme {scheme!r}; known: {', '.join(WEIGHT_SCHEMES)}")
    return raw * (present.sum() / raw.sum())


def apply_class_mask(logits: torch.Tensor, mask: torch.Tensor | np.ndarray | None) -> torch.Tensor:
    """Logits with classes outside ``mask`` (bool (N, C) or (C,), True = possible) set to -inf."""
    if mask is None:
        return logits
    mask = torch.as_tensor(mask, dtype=torch.bool, device=logits.device)
    if mask.shape != logits.shape and mask.shape != logits.shape[-1:]:
        raise ValueError(f"class mask has shape {tuple(mask.shape)} but logits have {tuple(logits.shape)}")
    return logits.masked_fill(~mask, float("-inf"))


class ClassificationLoss(nn.Module):
    """Base of the losses on logits (N, C): handles ``ignore_index``, class masks, class
    weights and the reduction; subclasses define :meth:`row_losses` (and may adjust logits)."""

    def __init__(
        self,
        ignore_index: int = -1,
        reduction: Reduction = "mean",
        weight: Sequence[float] | np.ndarray | torch.Tensor | None = None,
        n_classes: int | None = None,
    ) -> None:
        super().__init__()
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        self.ignore_index = ignore_index
        self.reduction = reduction
        weight_tensor = None if weight is None else torch.as_tensor(np.asarray(weight, dtype=np.float32))
        if weight_tensor is not None and weight_tensor.ndim != 1:
            raise ValueError(f"class weights must be 1-D, got shape {tuple(weight_tensor.shape)}")
        if weight_tensor is not None and n_classes is not None and weight_tensor.shape[0] != n_classes:
            raise ValueError(f"{weight_tensor.shape[0]} class weights for {n_classes} classes")
        self.register_buffer("weight", weight_tensor)
        # The number of classes when the loss knows it (from weights or counts), for a clear error.
        self.n_classes = n_classes if n_classes is not None else (None if weight_tensor is None else int(weight_tensor.shape[0]))

    def adjust_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Training-time logit transform (identity here; VS and logit adjustment override)."""
        return logits

    def row_losses(self, log_probs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Loss per row (n,) from log-probabilities (n, C) over the allowed classes."""
        raise NotImplementedError

    def forward(
        self,
        logits: torch.Tensor,
        targets: torch.Tensor,
        mask: torch.Tensor | np.ndarray | None = None,
    ) -> torch.Tensor:
        if logits.ndim != 2:
            raise ValueError(f"{type(self).__name__}: logits must be (N, C), got shape {tuple(logits.shape)}")
        n, c = logits.shape
        targets = torch.as_tensor(targets, device=logits.device)
        if targets.shape != (n,) or targets.dtype.is_floating_point or targets.dtype == torch.bool:
            raise ValueError(
                f"{type(self).__name__}: targets must be integer class indices of shape ({n},), "
                f"got {targets.dtype} {tuple(targets.shape)}"
            )
        expected = self.n_classes
        if expected is not None and expected != c:
            raise ValueError(f"{type(self).__name__} was built for {expected} classes but logits have {c}")
        targets = targets.long()
        valid = targets != self.ignore_index
        bad = valid & ((targets < 0) | (targets >= c))
        if bool(bad.any()):
            rows = torch.nonzero(bad).flatten()[:5].tolist()
            raise ValueError(f"{type(self).__name__}: targets outside 0..{c - 1} (and not ignore_index) at rows {rows}")
        row_mask = None
        if mask is not None:
            row_mask = torch.as_tensor(mask, dtype=torch.bool, device=logits.device)
            if row_mask.shape != (n, c):
                raise ValueError(f"{type(self).__name__}: class mask must be ({n}, {c}), got {tuple(row_mask.shape)}")
            row_mask = row_mask[valid]
        t = targets[valid]
        z = self.adjust_logits(logits[valid].float())
        if row_mask is not None:
            allowed = row_mask.gather(1, t[:, None]).squeeze(1)
            if not bool(allowed.all()):
                rows = torch.nonzero(valid).flatten()[~allowed][:5].tolist()
                raise ValueError(f"{type(self).__name__}: the target class is masked out at rows {rows}")
            z = z.masked_fill(~row_mask, float("-inf"))
        losses = self.row_losses(torch.log_softmax(z, dim=-1), t, row_mask)
        w = None if self.weight is None else self.weight.to(losses.device)[t]
        if self.reduction == "none":
            out = logits.new_zeros(n, dtype=losses.dtype)
            out[valid] = losses if w is None else losses * w
            return out
        if t.numel() == 0:
            return logits.sum() * 0.0  # no labelled rows: zero, still attached to the graph
        total = losses.sum() if w is None else (losses * w).sum()
        if self.reduction == "sum":
            return total
        return total / (t.numel() if w is None else w.sum())


def nll(log_probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return -log_probs.gather(1, targets[:, None]).squeeze(1)


def smoothed_nll(log_probs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None, smoothing: float) -> torch.Tensor:
    """(1 - eps) * -log p_y + eps * mean over the allowed classes of -log p_c."""
    loss = nll(log_probs, targets)
    if smoothing == 0:
        return loss
    if mask is None:
        uniform = -log_probs.mean(dim=-1)
    else:
        uniform = -torch.where(mask, log_probs, torch.zeros_like(log_probs)).sum(dim=-1) / mask.sum(dim=-1)
    return (1.0 - smoothing) * loss + smoothing * uniform
