"""Training heads on cached features, choosing checkpoints on validation, testing once.

Entry point for experiment runners: :func:`train_and_evaluate` (one fold). Building blocks:
:class:`SplitData` (arrays of a split), :class:`SealedSplit` (the test split, readable once
after training), :class:`TrainConfig`, :func:`build_estimator` (the estimator that
:data:`ESTIMATORS` holds for a head: a torch :class:`Trainer`, a classical estimator, ...,
all with the same ``fit``/``predict`` interface), normalisers in :mod:`polyemo.train.normalise`.
Unusable arrays raise :class:`DataError` (``SplitError`` is its deprecated alias).
"""

from polyemo.train.classical import ClassicalEstimator  # registers "classical"
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
from polyemo.train.trainer import Trainer  # registers "torch"

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
