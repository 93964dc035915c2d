"""Adapter giving the scikit-learn heads the estimator interface of the torch heads."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from polyemo.heads.classical import ClassicalHead, missing_classes
from polyemo.heads.layers import reduce_layers_numpy
from polyemo.heads.model import build_head
from polyemo.io import atomic_path
from polyemo.train.adapters import classification_scores
from polyemo.train.data import DataError, FitReceipt, SplitData
from polyemo.train.estimator import Estimator, FitReport, HeadOutput
from polyemo.train.registry import ESTIMATORS
from polyemo.train.sklearn_state import UnsafeStateError, load_state, save_state

#: the head's files in a run folder: parameters (safetensors) + structure (JSON); never pickle
HEAD_STATE = "head"
LEGACY_PICKLE = "head.joblib"


@ESTIMATORS.register("classical")
class ClassicalEstimator(Estimator):
    """Fits a :class:`~polyemo.heads.classical.ClassicalHead` on pooled features.

    Validation chooses ``C`` when the head is given several; sampling, epochs and the torch
    optimiser settings do not apply. Seeds come from ``TrainConfig.seed``. The training
    rows' class masks go to the head: logistic regression honours them; the SVMs refuse
    training rows whose corpora lack some of the training classes, naming the corpora
    (from the ``corpus/`` prefix of their utt_ids) and the classes they lack.
    """

    kind = "classical"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.head: ClassicalHead | None = None

    def _matrix(self, data: SplitData) -> np.ndarray:
        if data.is_frames:
            raise DataError(f"classical head {self.head_config.name!r} needs pooled features, got frame features")
        return reduce_layers_numpy(np.asarray(data.features), self.effective_head_config().layer_mode())

    def _fit(self, train: SplitData, val: SplitData) -> FitReport:
        config = self.effective_head_config()
        params = {"seed": self.train_config.seed, **config.params}
        self.head = build_head(config.model_copy(update={"params": params}), train.num_layers,
                               train.feature_dim, self.num_classes)
        metric = self.train_config.selection_metric

        def score(y_true: np.ndarray, y_pred: np.ndarray) -> float:
            return float(classification_scores(y_true, y_pred, list(range(self.num_classes)))[metric])

        self._check_masks(train)
        started = time.perf_counter()
        self.head.fit(self._matrix(train), train.labels, self._matrix(val), val.labels, score, masks=train.masks)
        probabilities = self.head.predict_proba(self._matrix(val))
        scores = classification_scores(val.labels, probabilities, self.class_names)
        record = {"epoch": None, "C": self.head.selected_C, "val_ua": scores["ua"], "val_wa": scores["wa"],
                  "val_macro_f1": scores["macro_f1"], "seconds": round(time.perf_counter() - started, 4),
                  "validation_scores": {str(k): v for k, v in self.head.validation_scores.items()}}
        receipt = FitReceipt(finished_at=time.time(), best_epoch=None)
        return FitReport(None, float(scores[metric]), [record], scores, receipt)

    def refit_settings(self, report: FitReport):
        """Refit with the C that validation chose."""
        C = self.head.selected_C
        head_config = self.head_config.model_copy(update={"params": {**self.head_config.params, "C": C}})
        return head_config, self.train_config.model_copy(update={"refit": False}), {"C": C}

    def _check_masks(self, train: SplitData) -> None:
        """Refuse, with the corpora and classes named, masks a head cannot honour."""
        if train.masks is None or self.head.supports_masks:
            return
        labelled = train.labels >= 0
        groups = None
        if train.utt_ids is not None:
            groups = [str(u).split("/", 1)[0] if "/" in str(u) else "(unnamed corpus)" for u in train.utt_ids[labelled]]
        lacking = missing_classes(train.masks[labelled], train.labels[labelled], groups)
        if lacking:
            what = "; ".join(f"{g} lacks {', '.join(self.class_names[c] for c in cs)}" for g, cs in lacking.items())
            raise DataError(
                f"head {self.head_config.name!r} cannot honour class masks, and some training corpora lack classes "
                f"that others have ({what}): it would learn that they never occur there. Use logreg or a torch "
                "head, train on one corpus, or choose a label set every corpus has (e.g. big4)")

    def _predict(self, data: SplitData) -> HeadOutput:
        if len(data) == 0:
            return HeadOutput(np.zeros((0, self.num_classes)))
        return HeadOutput(self.head.predict_proba(self._matrix(data)))

    def _save_head(self, directory: Path) -> None:
        # Parameters and structure, not pickle: loading a run folder must not run its code.
        save_state(self.head, directory, HEAD_STATE, {"head": self.head_config.name})

    def _load_head(self, directory: Path) -> None:
        if not (directory / f"{HEAD_STATE}.json").exists() and (directory / LEGACY_PICKLE).exists():
            raise UnsafeStateError(
                f"{directory / LEGACY_PICKLE}: a classical head stored with pickle (joblib) by an older polyemo; "
                "it is not loaded, since unpickling a file runs code from it. Re-run the experiment to store the "
                f"head as {HEAD_STATE}.safetensors + {HEAD_STATE}.json")
        head = load_state(directory, HEAD_STATE)
        if not isinstance(head, ClassicalHead):
            raise UnsafeStateError(f"{directory / (HEAD_STATE + '.json')}: holds a {type(head).__name__}, not a classical head")
        self.head = head
