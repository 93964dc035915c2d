"""``uniform-prior``: logit adjustment towards equally likely classes on the target batch.

An unseen language tends to be heard as one or two classes ("sad", "neutral"): the whole
batch's predicted prior moves. Assuming the target classes are equally likely, a per-class
logit offset b is found on the unlabelled batch so that its mean prediction is uniform
(fixed point ``b <- b - log(mean_x softmax(z + b) * C)``, a few iterations); ``strength`` a
in [0, 1] adds ``a * b`` (0: plain). Unlike ``prior-em`` it does not estimate the target
prior: it is right when the batch is balanced, and wrong by the batch's own imbalance.
"""

from __future__ import annotations

import numpy as np

from polyemo.train.adaptation import ADAPTERS, Adapter, normalise_rows


def uniform_offsets(probabilities: np.ndarray, iterations: int = 50, tol: float = 1e-6) -> np.ndarray:
    """Log-offsets b with mean_x normalise(p * exp(b)) ~ uniform."""
    p = normalise_rows(np.asarray(probabilities, dtype=np.float64))
    k = p.shape[1]
    b = np.zeros(k)
    for _ in range(iterations):
        mean = normalise_rows(p * np.exp(b)).mean(0)
        step = np.log(mean * k)
        b = b - step
        b = b - b.mean()
        if np.abs(step).max() < tol:
            break
    return b


@ADAPTERS.register("uniform-prior", "uniform_prior", "uniform")
class UniformPrior(Adapter):
    name = "uniform-prior"
    description = "logit adjustment: the unlabelled batch's mean prediction moved to equally likely classes"

    def __init__(self, strength: float = 1.0, iterations: int = 50) -> None:
        super().__init__(strength)
        if iterations < 1:
            raise ValueError(f"uniform-prior: iterations must be >= 1, got {iterations}")
        self.iterations = int(iterations)
        self.offsets: np.ndarray | None = None

    def fit(self, estimator, train) -> UniformPrior:
        return self  # nothing from training: the offsets come from the batch alone

    def adapt(self, estimator, batch, probabilities: np.ndarray) -> np.ndarray:
        if len(probabilities) == 0 or self.strength == 0.0:
            return probabilities
        self.offsets = uniform_offsets(probabilities, self.iterations)
        return normalise_rows(normalise_rows(probabilities) * np.exp(self.strength * self.offsets))
