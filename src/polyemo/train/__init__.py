"""Training heads on cached features, choosing checkpoints on validation, testing once.

Entry point for experiment runners: :func:`train_and_evaluate` (one fold). Building blocks:
:class:`SplitData` (arrays of a split), :class:`SealedSplit` (the test split, readable once
after training), :class:`TrainConfig`, :func:`build_estimator` (the estimator that
:data:`ESTIMATORS` holds for a head: a torch :class:`Trainer`, a classical estimator, ...,
all with the same ``fit``/``predict`` interface), normalisers in :mod:`polyemo.train.normalise`.
Unusable arrays raise :class:`DataError` (``SplitError`` is its deprecated alias).
"""

from polyemo.train.config import TrainConfig
from polyemo.train.data import (
    DataError,
    FitReceipt,
    SealedSplit,
    SealedSplitError,
    SplitData,
    SplitError,  # deprecated alias of DataError, kept for existing callers
)
from polyemo.train.estimator import (
    Estimator,
    FitReport,
    HeadOutput,
    Prediction,  # deprecated alias of HeadOutput
    build_estimator,
    fit_and_refit,
    load_estimator,
)
from polyemo.train.evaluate import FoldResult, train_and_evaluate
from polyemo.train.registry import ESTIMATORS

# The estimators register themselves when ESTIMATORS first looks them up; importing them here
# would pull scikit-learn into every ``import polyemo.train`` (prediction needs neither).
_LAZY = {"ClassicalEstimator": "polyemo.train.classical", "Trainer": "polyemo.train.trainer"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'polyemo.train' has no attribute {name!r}")

__all__ = [
    "ESTIMATORS",
    "ClassicalEstimator",
    "DataError",
    "Estimator",
    "FitReceipt",
    "FitReport",
    "FoldResult",
    "HeadOutput",
    "Prediction",
    "SealedSplit",
    "SealedSplitError",
    "SplitData",
    "SplitError",
    "TrainConfig",
    "Trainer",
    "build_estimator",
    "fit_and_refit",
    "load_estimator",
    "train_and_evaluate",
]
