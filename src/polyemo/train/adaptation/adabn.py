"""``adabn``: the unlabelled target batch's own feature statistics (AdaBN, Li et al. 2017).

The head stays frozen; its input is re-standardised with the moments of the batch instead of
the training rows': ``x' = (x - mean_batch) / std_batch * std_train + mean_train`` per layer
and dimension, ``x`` the features as the estimator's normaliser leaves them. Unlike
``test-speaker`` statistics it needs no speaker labels and one batch of a few dozen clips of
the new language or recording setup suffices, so it is deployable (``polyemo predict``
over a folder). With ``steps`` > 0 the TENT objective (:mod:`.tent`: entropy minus the
entropy of the batch's mean prediction) then moves shift and log-scale from there, which is
what TENT does in a network with batch normalisation. ``strength`` a scales the shift and
log-scale (0: plain, 1: the batch's statistics in full).
"""

from __future__ import annotations

import numpy as np

from polyemo.train.adaptation import ADAPTERS
from polyemo.train.adaptation.tent import Tent

#: floor of a batch standard deviation in the head's input units (a constant dimension
#: of the batch keeps its training scale instead of being blown up)
_MIN_STD = 1e-3


@ADAPTERS.register("adabn")
class AdaBN(Tent):
    name = "adabn"
    description = "the unlabelled batch's own feature statistics replace the training ones (AdaBN)"

    def __init__(self, strength: float = 1.0, steps: int = 0, lr: float = 0.05, diversity: float = 1.0) -> None:
        super().__init__(strength, steps=max(int(steps), 1), lr=lr, diversity=diversity)
        if steps < 0:
            raise ValueError(f"adabn: steps must be >= 0, got {steps}")
        self.steps = int(steps)
        #: (L, D) moments of the TRAINING features as the head sees them (None: 0 and 1, what a
        #: globally standardised head saw)
        self.train_mean: np.ndarray | None = None
        self.train_std: np.ndarray | None = None

    def fit(self, estimator, train) -> AdaBN:
        prepared = estimator._prepare(train)
        x = np.asarray(prepared.features, dtype=np.float64)
        self.train_mean, self.train_std = x.mean(0), x.std(0)
        return self

    def _start(self, x):
        import torch

        mean = x.double().mean(0)
        std = x.double().std(0, unbiased=False).clamp_min(_MIN_STD)
        train_mean = torch.zeros_like(mean) if self.train_mean is None else torch.as_tensor(self.train_mean)
        train_std = torch.ones_like(std) if self.train_std is None else torch.as_tensor(self.train_std)
        train_std = train_std.clamp_min(_MIN_STD)
        # (x - beta) * exp(-gamma) == (x - mean) / std * train_std + train_mean
        gamma = torch.log(std / train_std)
        beta = mean - train_mean * std / train_std
        return beta.float(), gamma.float()

    def params(self) -> dict:
        out = {"strength": self.strength, "steps": self.steps}
        if self.steps:
            out.update(lr=self.lr, diversity=self.diversity)
        return out


@ADAPTERS.register("adabn-tent")
class AdaBNTent(AdaBN):
    """TENT as in a batch-normalised network: the batch's statistics first, then ``steps``
    of the entropy objective (``tent`` starts from the training statistics instead)."""

    name = "adabn-tent"
    description = "the batch's own statistics, then entropy minimisation of the normalisation (TENT from AdaBN)"

    def __init__(self, strength: float = 1.0, steps: int = 10, lr: float = 0.05, diversity: float = 1.0) -> None:
        if steps < 1:
            raise ValueError(f"adabn-tent: steps must be >= 1, got {steps} (steps 0 is adabn)")
        super().__init__(strength, steps=steps, lr=lr, diversity=diversity)
