"""Adapter giving the scikit-learn heads the estimator interface of the torch heads."""

from __future__ import annotations

import time
from pathlib import Path

import joblib
import numpy as np

from polyemo.heads.classical import ClassicalHead
from polyemo.heads.layers import reduce_layers_numpy
from polyemo.heads.model import build_head
from polyemo.io import atomic_path
from polyemo.train.adapters import classification_scores
from polyemo.train.data import FitReceipt, SplitData, SplitError
from polyemo.train.estimator import Estimator, FitReport, Prediction


class ClassicalEstimator(Estimator):
    """Fits a :class:`~polyemo.heads.classical.ClassicalHead` on pooled features.

    Validation chooses ``C`` when the head is given several; class masks, sampling, epochs
    and the torch optimiser settings do not apply. Seeds come from ``TrainConfig.seed``.
    """

    kind = "classical"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.head: ClassicalHead | None = None

    def _matrix(self, data: SplitData) -> np.ndarray:
        if data.is_frames:
            raise SplitError(f"classical head {self.head_config.name!r} needs pooled features, got frame features")
        return reduce_layers_numpy(np.asarray(data.features), self.effective_head_config().layer_mode())

    def _fit(self, train: SplitData, val: SplitData) -> FitReport:
        config = self.effective_head_config()
        params = {"seed": self.train_config.seed, **config.params}
        self.head = build_head(config.model_copy(update={"params": params}), train.num_layers,
                               train.feature_dim, self.num_classes)
        metric = self.train_config.selection_metric

        def score(y_true: np.ndarray, y_pred: np.ndarray) -> float:
            return float(classification_scores(y_true, y_pred, list(range(self.num_classes)))[metric])

        started = time.perf_counter()
        self.head.fit(self._matrix(train), train.labels, self._matrix(val), val.labels, score)
        probabilities = self.head.predict_proba(self._matrix(val))
        scores = classification_scores(val.labels, probabilities, self.class_names)
        record = {"epoch": None, "C": self.head.selected_C, "val_ua": scores["ua"], "val_wa": scores["wa"],
                  "val_macro_f1": scores["macro_f1"], "seconds": round(time.perf_counter() - started, 4),
                  "validation_scores": {str(k): v for k, v in self.head.validation_scores.items()}}
        receipt = FitReceipt(finished_at=time.time(), best_epoch=None)
        return FitReport(None, float(scores[metric]), [record], scores, receipt)

    def _predict(self, data: SplitData) -> Prediction:
        if len(data) == 0:
            return Prediction(np.zeros((0, self.num_classes)))
        return Prediction(self.head.predict_proba(self._matrix(data)))

    def _save_head(self, directory: Path) -> None:
        # scikit-learn models have no safer standard format than pickle (via joblib).
        with atomic_path(directory / "head.joblib") as tmp:
            joblib.dump(self.head, tmp)

    def _load_head(self, directory: Path) -> None:
        self.head = joblib.load(directory / "head.joblib")
