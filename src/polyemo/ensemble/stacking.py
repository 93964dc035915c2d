"""Stacking: a logistic regression on the members' validation log-probabilities.

Inputs are every member's log-probabilities side by side (M x C features); the regression
(``C``, class-balanced by default, like the heads) is fitted on validation rows only and
predicts the class. A class absent from the validation rows gets probability 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from polyemo.ensemble import RULES
from polyemo.ensemble.base import Combined, Rule

EPS = 1e-6


def _features(probabilities: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.log(np.clip(p, EPS, 1.0)) for p in probabilities], axis=1)


@RULES.register("stacking", "stack", "logreg")
class Stacking(Rule):
    name = "stacking"
    fitted_on_validation = True

    def __init__(self, members, C: float = 1.0, balanced: bool = True, **params: Any) -> None:
        if params:
            raise ValueError(f"ensemble rule 'stacking': unknown parameters {sorted(params)} (it takes C, balanced)")
        super().__init__(members, C=float(C), balanced=bool(balanced))

    def _fit(self, probabilities: list[np.ndarray], labels: np.ndarray) -> dict[str, Any]:
        from sklearn.linear_model import LogisticRegression

        present = sorted(set(labels.tolist()))
        if len(present) < 2:
            raise ValueError(f"stacking needs validation rows of at least two classes, got classes {present}")
        model = LogisticRegression(C=self.params["C"], max_iter=2000,
                                   class_weight="balanced" if self.params["balanced"] else None)
        model.fit(_features(probabilities), labels)
        return {"classes": [int(c) for c in model.classes_], "coef": model.coef_.tolist(),
                "intercept": model.intercept_.tolist(), "n_validation": int(len(labels))}

    def _combine(self, probabilities: list[np.ndarray]) -> Combined:
        coef = np.asarray(self.learned["coef"])
        intercept = np.asarray(self.learned["intercept"])
        classes = self.learned["classes"]
        logits = _features(probabilities) @ coef.T + intercept
        if len(classes) == 2 and coef.shape[0] == 1:  # binary: one decision function
            logits = np.concatenate([np.zeros_like(logits), logits], axis=1)
        logits -= logits.max(axis=1, keepdims=True)
        known = np.exp(logits)
        known /= known.sum(axis=1, keepdims=True)
        out = np.zeros((len(known), self.num_classes))
        out[:, classes] = known
        return Combined(out, out.argmax(axis=1))
