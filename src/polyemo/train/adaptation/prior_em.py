"""``prior-em``: label-shift correction by EM (Saerens, Latinne & Decaestecker 2002).

Under label shift p(x|y) stays and only p(y) moves. With the model's source prior pi_s and
its posteriors p_s(y|x) on the unlabelled batch, EM alternates
``p_t(y|x) ∝ p_s(y|x) * pi_t(y) / pi_s(y)`` and ``pi_t = mean_x p_t(y|x)`` until pi_t
stops moving. ``strength`` a in [0, 1] applies ``(pi_t / pi_s) ** a`` (0: plain); ``floor``
keeps every class's estimated prior above floor / C, so one batch cannot erase a class.
"""

from __future__ import annotations

import numpy as np

from polyemo.train.adaptation import ADAPTERS, Adapter, normalise_rows


def em_priors(probabilities: np.ndarray, source_prior: np.ndarray, *, max_iter: int = 100, tol: float = 1e-6,
              floor: float = 0.0) -> np.ndarray:
    """The target prior EM converges to (Saerens et al. 2002, eqs. 2.4-2.5)."""
    p = np.asarray(probabilities, dtype=np.float64)
    prior_s = np.asarray(source_prior, dtype=np.float64)
    prior_t = prior_s.copy()
    k = len(prior_s)
    for _ in range(max_iter):
        posterior = normalise_rows(p * (prior_t / prior_s))
        new = posterior.mean(0)
        if floor > 0:
            new = np.maximum(new, floor / k)
            new = new / new.sum()
        if np.abs(new - prior_t).max() < tol:
            prior_t = new
            break
        prior_t = new
    return prior_t


@ADAPTERS.register("prior-em", "prior_em", "em", "prior")
class PriorEM(Adapter):
    name = "prior-em"
    description = "label shift: EM re-estimation of the class priors on the unlabelled batch (Saerens et al. 2002)"

    def __init__(self, strength: float = 1.0, max_iter: int = 100, floor: float = 0.1) -> None:
        super().__init__(strength)
        if max_iter < 1:
            raise ValueError(f"prior-em: max_iter must be >= 1, got {max_iter}")
        if not 0.0 <= floor < 1.0:
            raise ValueError(f"prior-em: floor must be in [0, 1), got {floor}")
        self.max_iter, self.floor = int(max_iter), float(floor)
        self.target_prior: np.ndarray | None = None

    def adapt(self, estimator, batch, probabilities: np.ndarray) -> np.ndarray:
        if self.source_prior is None:
            raise RuntimeError("prior-em: fit it on the training rows first")
        if len(probabilities) == 0 or self.strength == 0.0:
            return probabilities
        self.target_prior = em_priors(probabilities, self.source_prior, max_iter=self.max_iter, floor=self.floor)
        return normalise_rows(probabilities * (self.target_prior / self.source_prior) ** self.strength)

    def params(self) -> dict:
        return {"strength": self.strength, "floor": self.floor}
