"""The ``zero-shot-lm`` estimator: a prompted causal LM as a run member (Abhinaya's T1).

Rows come from ``features: lm`` (texts). Each row's class scores are the log-likelihoods of
the class names after the prompt (:class:`polyemo.text_lm.ZeroShotLM`); the member's
probabilities are their softmax, so a run of this head has per-fold test predictions and,
without a refit, validation predictions like any member, and ``polyemo ensemble`` votes with
it on the same folds. Nothing is trained (``calibrate: false``, the default): ``fit`` only
scores the validation rows (the tie-break and the ensemble rules read them). With
``calibrate: true`` the ``zero_shot_lm`` head (a linear layer, initialised to the identity)
is trained by the torch Trainer on the training rows' log-likelihoods, the epoch chosen on
validation.

Head params: the :class:`~polyemo.text_lm.ZeroShotConfig` fields (``model`` or ``lm``,
``prompt``, ``answer``, ``label_names``, ``length_norm``, ...) and ``calibrate``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from polyemo.io import write_json
from polyemo.train.data import DataError, FitReceipt, SplitData
from polyemo.train.estimator import FitReport, HeadOutput
from polyemo.train.registry import ESTIMATORS
from polyemo.train.trainer import Trainer

INFO_FILE = "zero_shot.json"
HEAD_KEYS = ("calibrate", "dropout")
#: scores by (LM config, classes) -> text, shared by the folds of a process
_SCORES: dict[str, dict[str, np.ndarray]] = {}


@ESTIMATORS.register("zero-shot-lm")
class ZeroShotLMEstimator(Trainer):
    kind = "zero-shot-lm"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        from polyemo.text_lm import ZeroShotConfig

        params = {k: v for k, v in self.head_config.params.items() if k not in HEAD_KEYS}
        if "lm" in params:
            params["model"] = params.pop("lm")
        self.zero_shot = ZeroShotConfig(**params)
        self.calibrate = bool(self.head_config.params.get("calibrate", False))
        if self.train_config.normalisation != "none":
            raise ValueError(f"the zero-shot LM reads texts: normalisation must be none, not {self.train_config.normalisation!r}")
        self._scorer = None

    def scorer(self):
        if self._scorer is None:
            from polyemo.text_lm import ZeroShotLM

            config = self.zero_shot
            if config.local_files_only and not Path(config.model).expanduser().exists():
                # a packaged or cached model by name (e.g. whisper-base: its decoder as the LM)
                import polyemo.encoders.whisper  # noqa: F401  (registers the packaged Whisper folders)
                from polyemo.encoders.hf import ModelNotFoundError, resolve_model

                try:
                    config = config.model_copy(update={"model": str(resolve_model(config.model).path)})
                except ModelNotFoundError as error:
                    raise ValueError(f"zero-shot LM {config.model!r}: {error}") from None
            self._scorer = ZeroShotLM(config, self.class_names)
        return self._scorer

    def scores(self, texts: list[str]) -> np.ndarray:
        """(N, C) log-likelihoods; texts already scored by this LM and prompt in this process
        (the same sentences in every fold) are read from memory."""
        key = json.dumps([self.zero_shot.model_dump(mode="json"), self.class_names], sort_keys=True)
        memo = _SCORES.setdefault(key, {})
        if len(_SCORES) > 4:
            _SCORES.pop(next(iter(_SCORES)))
        todo = list(dict.fromkeys(t for t in texts if t not in memo))
        if todo:
            memo.update(zip(todo, self.scorer().log_likelihoods(todo)))
        return np.array([memo[t] for t in texts], np.float32).reshape(len(texts), self.num_classes)

    def log_likelihoods(self, data: SplitData) -> SplitData:
        """The rows as (N, 1, C) class log-likelihoods (the calibrating head's features)."""
        from polyemo.text_lm.rows import unpack_row

        if not data.is_frames:
            raise DataError("the zero_shot_lm head reads 'features: lm' rows (texts), got pooled features")
        texts = [unpack_row(row)[0] for row in data.features]
        scores = self.scores(texts)
        return data.with_features(scores[:, None, :])

    def fit(self, train: SplitData, val: SplitData) -> FitReport:
        # the base fit checks the splits and fits the (absent) normaliser on the LM's scores
        return super().fit(self.log_likelihoods(train), self.log_likelihoods(val)) if self.calibrate \
            else self._zero_shot_fit(train, val)

    def _zero_shot_fit(self, train: SplitData, val: SplitData) -> FitReport:
        from polyemo.train.adapters import classification_scores

        for name, split in (("training", train), ("validation", val)):
            if not split.has_labels:
                raise DataError(f"the {name} split has no labelled rows")
        self.num_layers, self.feature_dim = 1, self.num_classes
        self.fitted = True
        scores = {}
        if len(val):
            scores = classification_scores(val.labels, self._predict(self.log_likelihoods(val)).predictions, self.class_names)
        return FitReport(None, float(scores.get(self.train_config.selection_metric, float("nan"))), [], scores,
                         FitReceipt(finished_at=time.time(), best_epoch=None))

    def predict(self, data: SplitData) -> HeadOutput:
        if not self.fitted:
            raise RuntimeError(f"{type(self).__name__} is not fitted")
        return self._predict(self._prepare(self.log_likelihoods(data)))

    def _predict(self, data: SplitData) -> HeadOutput:
        if self.calibrate:
            return super()._predict(data)
        scores = np.asarray(data.features, np.float64)[:, 0]
        scores = scores - scores.max(axis=1, keepdims=True)
        probabilities = np.exp(scores)
        return HeadOutput(probabilities / probabilities.sum(axis=1, keepdims=True))

    def refit_settings(self, report: FitReport):
        if self.calibrate:
            return super().refit_settings(report)
        return self.head_config, self.train_config.model_copy(update={"refit": False}), {"epochs": None}

    def _save_head(self, directory: Path) -> None:
        write_json(directory / INFO_FILE, {"zero_shot": self.zero_shot.model_dump(mode="json"), "calibrate": self.calibrate})
        if self.calibrate:
            super()._save_head(directory)

    def _load_head(self, directory: Path) -> None:
        if self.calibrate:
            super()._load_head(directory)
