"""Test-time adaptation: an estimator's plain predictions re-made for one unlabelled batch.

An adapter sees a fitted estimator, the rows it was trained on (to learn what the model
believes about classes before any target data: :meth:`Adapter.fit`) and one held-out batch
of UNLABELLED rows (:meth:`Adapter.adapt`); it returns new probabilities for that batch.
Labels of the batch are never read (tests pass batches whose labels are scrambled and get the
same output). Each adapter is one file of this package, registered in :data:`ADAPTERS`:

* ``prior-em`` (:mod:`.prior_em`): label-shift correction, EM re-estimation of the target
  class priors (Saerens, Latinne & Decaestecker 2002) on the batch.
* ``uniform-prior`` (:mod:`.uniform_prior`): logit adjustment that assumes the target
  classes are equally likely: the batch's mean prediction is moved to uniform.
* ``tent`` (:mod:`.tent`): TENT-style entropy minimisation of the normalisation only (a
  per-dimension shift and scale of the head's input), a fixed small step budget.

``strength`` (every adapter): 0 leaves the plain prediction, 1 applies the adaptation fully;
it is chosen by an inner leave-one-language-out over the TRAINING languages
(:func:`polyemo.experiment.selection.choose_adaptation`), never on the held-out batch.
Enrolled-speaker statistics (the other deployable adaptation) are a normaliser
(:mod:`polyemo.train.normalise`), not an adapter.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from polyemo.registry import Registry
from polyemo.train.data import SplitData

ADAPTERS: Registry = Registry("adapter", "polyemo.train.adaptation")

_EPS = 1e-12


class Adapter:
    """Base: ``fit(estimator, train)`` once, then ``adapt(estimator, batch, probabilities)``."""

    name: ClassVar[str] = ""
    #: what it uses, for reports
    description: ClassVar[str] = ""

    def __init__(self, strength: float = 1.0) -> None:
        if not 0.0 <= float(strength) <= 1.0:
            raise ValueError(f"{self.name}: strength must be in [0, 1], got {strength}")
        self.strength = float(strength)
        #: mean predicted probability over the training rows: the prior the model believes in
        self.source_prior: np.ndarray | None = None

    def fit(self, estimator, train: SplitData) -> Adapter:
        """Learn from TRAINING rows (the model's own prior); the batch is not seen here."""
        self.source_prior = model_prior(estimator, train)
        return self

    def adapt(self, estimator, batch: SplitData, probabilities: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        return {"strength": self.strength}

    def describe(self) -> str:
        settings = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.params().items())
        return f"{self.name} ({self.description}; {settings})"


def model_prior(estimator, train: SplitData) -> np.ndarray:
    """The class prior a fitted model has learnt: its mean predicted probability on ``train``.

    Not the label frequencies: class masks, balanced sampling and class weights change what a
    head believes, and its mean prediction on its own training rows says what that is."""
    probabilities = estimator.predict(train).probabilities
    prior = np.clip(probabilities.mean(0), _EPS, None)
    return prior / prior.sum()


def adaptation_state(estimator, train: SplitData) -> dict[str, np.ndarray]:
    """What a deployed model needs from its TRAINING rows to adapt later (a bundle's
    ``adaptation.safetensors``): ``source_prior`` (:func:`model_prior`) and ``feature_mean`` /
    ``feature_std`` (L, D), the moments of the features as the head sees them (after the
    normaliser and layer choice), onto which ``enrolled`` maps each speaker's statistics."""
    prepared = estimator._prepare(train)
    if prepared.is_frames:
        raise ValueError("adaptation state is computed from pooled features; frame features are not supported")
    x = np.asarray(prepared.features, dtype=np.float64)
    return {"source_prior": model_prior(estimator, train), "feature_mean": x.mean(0), "feature_std": x.std(0)}


def min_batch(name: str, num_classes: int) -> int:
    """Recordings an unlabelled batch needs before ``name`` adapts to it: a batch smaller than
    the number of classes cannot show a class prior (prior-em, uniform-prior), and entropy
    minimisation on a handful of clips only makes each of them more confident (tent)."""
    ADAPTERS.get(name)  # unknown names fail here
    return max(2, int(num_classes))


def normalise_rows(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, None)
    return p / p.sum(1, keepdims=True)


def make_adapter(name: str, **params: Any) -> Adapter:
    """An adapter of :data:`ADAPTERS` by name (``prior-em``, ``uniform-prior``, ``tent``)."""
    return ADAPTERS.get(name)(**params)


def adapt_batch(estimator, train: SplitData, batch: SplitData, adapter: Adapter | str,
                probabilities: np.ndarray | None = None, **params: Any) -> np.ndarray:
    """Probabilities of ``batch`` after ``adapter`` (fitted on ``train`` here)."""
    if isinstance(adapter, str):
        adapter = make_adapter(adapter, **params)
    adapter.fit(estimator, train)
    if probabilities is None:
        probabilities = estimator.predict(batch).probabilities
    return adapter.adapt(estimator, batch, np.asarray(probabilities, dtype=np.float64))


__all__ = ["ADAPTERS", "Adapter", "adapt_batch", "adaptation_state", "make_adapter", "min_batch", "model_prior",
           "normalise_rows"]
