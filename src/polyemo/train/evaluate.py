"""One fold: train on train, select on validation, then -- once -- predict the test split."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from polyemo.heads.model import HeadConfig
from polyemo.train.adapters import classification_scores
from polyemo.train.config import TrainConfig
from polyemo.train.data import SealedSplit, SplitData
from polyemo.train.estimator import Estimator, fit_and_refit


@dataclass
class FoldResult:
    """Test predictions of one fold and how the model was chosen.

    ``probabilities`` (N_test, C) and ``predictions`` (N_test,) follow the test rows' order;
    ``labels`` are the test labels (-1 unlabelled) for scoring; ``test_metrics`` are filled
    when the test split has labels. ``history`` is the per-epoch validation curve.
    """

    class_names: list[str]
    probabilities: np.ndarray
    predictions: np.ndarray
    labels: np.ndarray | None
    utt_ids: np.ndarray | None
    best_epoch: int | None
    history: list[dict[str, Any]]
    val_metrics: dict[str, Any]
    test_metrics: dict[str, Any] | None
    layer_weights: np.ndarray | None
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    estimator: Estimator | None = field(default=None, repr=False)
    #: what the refit on training + validation fixed (None: no refit)
    refit: dict[str, Any] | None = None

    def predictions_frame(self) -> pd.DataFrame:
        """One row per test utterance: utt_id, label, prediction and a probability per class."""
        frame = pd.DataFrame({
            "utt_id": self.utt_ids if self.utt_ids is not None else np.arange(len(self.predictions)),
            "label": [self.class_names[i] if i >= 0 else None for i in self.labels]
            if self.labels is not None else None,
            "prediction": [self.class_names[i] for i in self.predictions],
        })
        for j, name in enumerate(self.class_names):
            frame[f"p_{name}"] = self.probabilities[:, j]
        return frame

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary (no per-row arrays)."""
        return {
            "class_names": self.class_names,
            "best_epoch": self.best_epoch,
            "val_metrics": self.val_metrics,
            "test_metrics": self.test_metrics,
            "history": self.history,
            "layer_weights": None if self.layer_weights is None else self.layer_weights.tolist(),
            "n_test": len(self.predictions),
            "refit": self.refit,
        }


def _num_classes(class_names: Sequence[str] | None, *splits: SplitData) -> int:
    if class_names is not None:
        return len(class_names)
    for split in splits:
        if split.masks is not None:
            return split.masks.shape[1]
    return int(max(split.labels.max() for split in splits)) + 1


def train_and_evaluate(train: SplitData, val: SplitData, test: SplitData | SealedSplit,
                       head_config: HeadConfig, train_config: TrainConfig,
                       class_names: Sequence[str] | None = None, callbacks: Sequence = ()) -> FoldResult:
    """Fit on ``train``, choose the checkpoint on ``val``, refit on both with the choices fixed
    (``train_config.refit``), then open ``test`` once and predict it.

    ``test`` is wrapped in a :class:`SealedSplit` at once (if it is not already): it opens
    only with the receipt that a finished ``fit`` returns, so no training or selection step
    can read it.
    """
    sealed = test if isinstance(test, SealedSplit) else SealedSplit(test)
    num_classes = _num_classes(class_names, train, val)
    estimator, report, refit = fit_and_refit(head_config, train_config, num_classes,
                                             list(class_names) if class_names else None, train, val, callbacks)

    test_data = sealed.open(report.receipt)
    prediction = estimator.predict(test_data)
    test_metrics = None
    if test_data.has_labels:
        test_metrics = classification_scores(test_data.labels, prediction.probabilities, estimator.class_names)
    return FoldResult(
        class_names=estimator.class_names,
        probabilities=prediction.probabilities,
        predictions=prediction.predictions,
        labels=test_data.labels,
        utt_ids=test_data.utt_ids,
        best_epoch=report.best_epoch,
        history=report.history,
        val_metrics=report.val_metrics,
        test_metrics=test_metrics,
        layer_weights=estimator.layer_weights(),
        outputs=prediction.outputs,
        estimator=estimator,
        refit=refit,
    )
