"""Probability averaging: the mean of the members' class probabilities (nothing fitted)."""

from __future__ import annotations

from typing import Any

import numpy as np

from polyemo.ensemble import RULES
from polyemo.ensemble.base import Combined, Rule, normalised


@RULES.register("mean", "average", "averaging")
class Average(Rule):
    name = "mean"

    def __init__(self, members, **params: Any) -> None:
        if params:
            raise ValueError(f"ensemble rule 'mean' takes no parameters, got {sorted(params)}")
        super().__init__(members)

    def _fit(self, probabilities: list[np.ndarray], labels: np.ndarray) -> dict[str, Any]:
        return {}

    def _combine(self, probabilities: list[np.ndarray]) -> Combined:
        mean = normalised(np.mean(np.stack(probabilities), axis=0))
        return Combined(mean, mean.argmax(axis=1))
