"""Training heads on cached features, choosing checkpoints on validation, testing once.

Entry point for experiment runners: :func:`train_and_evaluate` (one fold). Building blocks:
:class:`SplitData` (arrays of a split), :class:`SealedSplit` (the test split, readable once
after training), :class:`TrainConfig`, :func:`build_estimator` (a torch :class:`Trainer` or
a classical estimator with the same ``fit``/``predict`` interface), normalisers in
:mod:`polyemo.train.normalise`.
"""

from polyemo.train.config import TrainConfig
from polyemo.train.data import (
    FitReceipt,
    SealedSplit,
    SealedSplitError,
    SplitData,
    SplitError,
)
from polyemo.train.estimator import (
    Estimator,
    FitReport,
    Prediction,
    build_estimator,
    load_estimator,
)
from polyemo.train.evaluate import FoldResult, train_and_evaluate
from polyemo.train.trainer import Trainer

__all__ = [
    "Estimator",
    "FitReceipt",
    "FitReport",
    "FoldResult",
    "Prediction",
    "SealedSplit",
    "SealedSplitError",
    "SplitData",
    "SplitError",
    "TrainConfig",
    "Trainer",
    "build_estimator",
    "load_estimator",
    "train_and_evaluate",
]
