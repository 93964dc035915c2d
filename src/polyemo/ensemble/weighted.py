"""Weighted averaging: one weight per member, fitted on validation predictions.

The weights (non-negative, summing to 1: a softmax of free parameters) minimise the
validation cross-entropy of the weighted mean of probabilities; with ``balanced`` (default)
every class weighs the same in that loss (rows weighted by 1 / their class's count), which
matches the unweighted accuracy the runs are scored by. ``l2`` shrinks the free parameters
towards equal weights (small validation sets).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from polyemo.ensemble import RULES
from polyemo.ensemble.base import Combined, Rule, normalised

EPS = 1e-7


@RULES.register("weighted", "weights", "weighted_mean")
class WeightedAverage(Rule):
    name = "weighted"
    fitted_on_validation = True

    def __init__(self, members, balanced: bool = True, l2: float = 1e-3, **params: Any) -> None:
        if params:
            raise ValueError(f"ensemble rule 'weighted': unknown parameters {sorted(params)} (it takes balanced, l2)")
        super().__init__(members, balanced=bool(balanced), l2=float(l2))

    def _fit(self, probabilities: list[np.ndarray], labels: np.ndarray) -> dict[str, Any]:
        from scipy.optimize import minimize

        stacked = np.stack(probabilities)  # (M, N, C)
        picked = stacked[:, np.arange(len(labels)), labels]  # (M, N): each member's probability of the truth
        if self.params["balanced"]:
            counts = np.bincount(labels, minlength=stacked.shape[2]).astype(np.float64)
            row_weight = 1.0 / counts[labels]
        else:
            row_weight = np.ones(len(labels))
        row_weight = row_weight / row_weight.sum()
        l2 = self.params["l2"]

        def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
            w = np.exp(theta - theta.max())
            w /= w.sum()
            p = np.clip(w @ picked, EPS, None)
            value = -float(row_weight @ np.log(p)) + l2 * float(theta @ theta)
            # d/dw of -sum r log(w.p) is -sum r p_m / (w.p); chain rule through the softmax
            grad_w = -(picked / p) @ row_weight
            grad = w * (grad_w - w @ grad_w) + 2 * l2 * theta
            return value, grad

        result = minimize(loss, np.zeros(len(probabilities)), jac=True, method="L-BFGS-B")
        w = np.exp(result.x - result.x.max())
        w /= w.sum()
        return {"weights": dict(zip(self.members, map(float, w))), "validation_loss": float(result.fun),
                "n_validation": int(len(labels))}

    def _combine(self, probabilities: list[np.ndarray]) -> Combined:
        w = np.array([self.learned["weights"][m] for m in self.members])
        mean = normalised(np.tensordot(w, np.stack(probabilities), axes=1))
        return Combined(mean, mean.argmax(axis=1))
