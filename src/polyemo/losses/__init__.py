"""Training losses, by name: ``LOSSES`` holds one factory per loss, ``build_loss`` makes one.

Classification losses take logits (N, C), integer targets (N,) with ``ignore_index=-1`` for
unlabelled rows, and an optional class mask (N, C) (True = the row's corpus can produce the
class); see :mod:`polyemo.losses.base`. ``ccc`` is the dimensional loss on (N, D) values.

Registered: ``ce`` (label smoothing), ``weighted_ce``, ``focal``, ``weighted_focal``,
``vs`` (vector scaling, Kini et al. 2021), ``logit_adjusted`` (Menon et al. 2021), ``ccc``.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from polyemo.losses.base import (
    WEIGHT_SCHEMES,
    ClassificationLoss,
    apply_class_mask,
    class_priors,
    class_weights,
)
from polyemo.registry import Registry

LOSSES: Registry[type[nn.Module]] = Registry("loss", __name__)


def build_loss(
    name: str,
    class_counts: Sequence[float] | np.ndarray | torch.Tensor | None = None,
    **params: Any,
) -> nn.Module:
    """The loss ``name`` with ``params``; ``class_counts`` (training examples per class, in
    label order) go to the losses that need them and are ignored by the others.

    >>> build_loss("weighted_focal", class_counts=[120, 30, 50], gamma=2.0, scheme="effective")
    """
    cls = LOSSES.get(name)
    signature = inspect.signature(cls.__init__)
    accepted = set(signature.parameters) - {"self"}
    unknown = sorted(set(params) - accepted)
    if unknown:
        options = ", ".join(sorted(accepted - {"class_counts"}))
        raise TypeError(f"loss {name!r} takes no parameter(s) {unknown}; its parameters: {options}")
    if "class_counts" in accepted:
        required = signature.parameters["class_counts"].default is inspect.Parameter.empty
        if class_counts is None and required:
            raise ValueError(f"loss {name!r} needs class_counts (training examples per class)")
        if class_counts is not None:
            params["class_counts"] = class_counts
    return cls(**params)


def posthoc_logit_adjustment(logits, priors, tau: float = 1.0):
    """Prediction-time logit adjustment (Menon et al. 2021): ``logits - tau * log(prior)``.

    Makes a model trained with plain cross-entropy on imbalanced data predict as if trained
    for balanced error (argmax of the result). ``priors``: training class frequencies or
    counts (normalised here). Works on torch tensors and numpy arrays alike.
    """
    from polyemo.losses.logit_adjusted import log_prior_offsets

    offsets = log_prior_offsets(priors, tau, "posthoc_logit_adjustment")
    if isinstance(logits, torch.Tensor):
        if logits.shape[-1] != offsets.shape[0]:
            raise ValueError(f"logits have {logits.shape[-1]} classes but priors {offsets.shape[0]}")
        return logits - torch.as_tensor(offsets, dtype=logits.dtype, device=logits.device)
    arr = np.asarray(logits)
    if arr.shape[-1] != offsets.shape[0]:
        raise ValueError(f"logits have {arr.shape[-1]} classes but priors {offsets.shape[0]}")
    return arr - offsets.astype(arr.dtype if arr.dtype.kind == "f" else np.float64)


__all__ = [
    "LOSSES",
    "WEIGHT_SCHEMES",
    "ClassificationLoss",
    "apply_class_mask",
    "build_loss",
    "class_priors",
    "class_weights",
    "posthoc_logit_adjustment",
]
