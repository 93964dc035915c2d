"""Training heads on cached features, choosing checkpoints on validation, testing once.

Entry point for experiment runners: :func:`train_and_evaluate` (one fold). Building blocks:
:class:`SplitData` (arrays of a split), :class:`SealedSplit` (the test split, readable once
after training), :class:`TrainConfig`, :func:`build_estimator` (the estimator that
:data:`ESTIMATORS` holds for a head: a torch :class:`Trainer`, a classical estimator, ...,
all with the same ``fit``/``predict`` interface), normalisers in :mod:`polyemo.train.normalise`.
Unusable arrays raise :class:`DataError` (``SplitError`` is its deprecated alias).
"""

# Everything is imported on first use: prediction imports polyemo.train.normalise, and that
# must not pull pandas, scikit-learn or the trainer into a cold start.
_LAZY = {
    "TrainConfig": "polyemo.train.config",
    **{name: "polyemo.train.data" for name in
       ("DataError", "FitReceipt", "SealedSplit", "SealedSplitError", "SplitData", "SplitError")},
    **{name: "polyemo.train.estimator" for name in
       ("Estimator", "FitReport", "HeadOutput", "Prediction", "build_estimator", "fit_and_refit", "load_estimator")},
    "FoldResult": "polyemo.train.evaluate",
    "train_and_evaluate": "polyemo.train.evaluate",
    "ESTIMATORS": "polyemo.train.registry",
    "ClassicalEstimator": "polyemo.train.classical",
    "Trainer": "polyemo.train.trainer",
}


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
