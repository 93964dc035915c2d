"""One fit/predict interface for every way of training a head: torch heads
(:class:`~polyemo.train.trainer.Trainer`, ``"torch"``), classical scikit-learn heads
(:class:`~polyemo.train.classical.ClassicalEstimator`, ``"classical"``), and whatever
registers itself in :data:`polyemo.train.registry.ESTIMATORS`.

An estimator owns everything between features and probabilities: layer selection, the
feature normaliser (fitted on the training split only) and the head. ``fit(train, val)``
returns a :class:`FitReport` whose ``receipt`` opens the sealed test split; ``predict``
applies the same preparation to new data and returns a :class:`HeadOutput`.
``save``/``load_estimator`` keep all of it in a folder (JSON + arrays + weights), for
bundles and prediction. A new estimator subclasses :class:`Estimator` (``_fit``,
``_predict``, ``_save_head``, ``_load_head``, ``refit_settings``) in its own file, decorated
with ``@ESTIMATORS.register(name)``; heads it trains set ``estimator = name``.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from polyemo.heads.model import HeadConfig
from polyemo.io import write_json
from polyemo.train.config import TrainConfig
from polyemo.train.data import DataError, FitReceipt, SplitData
from polyemo.train.normalise import Normaliser, make_normaliser
from polyemo.train.registry import ESTIMATORS, estimator_kind


@dataclass
class FitReport:
    """What training produced: the chosen epoch, the validation curve and the test key."""

    best_epoch: int | None
    best_score: float
    history: list[dict[str, Any]]
    val_metrics: dict[str, Any]
    receipt: FitReceipt = field(repr=False)


@dataclass
class HeadOutput:
    """What an estimator predicts for N rows: emotion probabilities (N, C) and any auxiliary
    outputs (``gender`` probabilities, ``avd``). Not :class:`polyemo.predict.Prediction`
    (one clip's result from a bundle)."""

    probabilities: np.ndarray
    outputs: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def predictions(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)


#: deprecated alias (the name clashed with :class:`polyemo.predict.Prediction`); use HeadOutput
Prediction = HeadOutput


def _check_finite(data: SplitData, name: str) -> None:
    bad = data.nonfinite_rows()
    if len(bad):
        ids = data.utt_ids[bad[:5]].tolist() if data.utt_ids is not None else bad[:5].tolist()
        raise DataError(f"the {name} split has {len(bad)} rows with NaN/inf features (failed extraction?), "
                         f"e.g. {ids}; drop them first")


class Estimator(ABC):
    kind: str = ""

    def __init__(self, head_config: HeadConfig, train_config: TrainConfig, num_classes: int,
                 class_names: list[str] | None = None) -> None:
        if num_classes < 2:
            raise ValueError(f"need at least two classes, got {num_classes}")
        self.head_config = head_config
        self.train_config = train_config
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        if len(self.class_names) != num_classes:
            raise ValueError(f"{len(self.class_names)} class names for {num_classes} classes")
        self.normaliser: Normaliser | None = None
        self.num_layers: int | None = None  # of the features the head sees (after layer selection)
        self.feature_dim: int | None = None
        self.fitted = False

    # ------------------------------------------------------------------ public interface
    def fit(self, train: SplitData, val: SplitData) -> FitReport:
        """Train on ``train``; select on ``val``. The test split is not an argument."""
        for name, split in (("training", train), ("validation", val)):
            if not isinstance(split, SplitData):
                raise TypeError(f"the {name} split must be a SplitData, got {type(split).__name__}")
            if not split.has_labels:
                raise DataError(f"the {name} split has no labelled rows")
            if split.labels.max() >= self.num_classes:
                raise DataError(f"the {name} split has label {int(split.labels.max())} >= {self.num_classes} classes")
            if split.masks is not None and split.masks.shape[1] != self.num_classes:
                raise DataError(f"the {name} split's masks have {split.masks.shape[1]} classes, expected {self.num_classes}")
            _check_finite(split, name)
        if train.is_frames != val.is_frames:
            raise DataError("training and validation features differ in kind (pooled vs frames)")
        self.normaliser = make_normaliser(self.train_config.normalisation, **self.train_config.normaliser_options())
        train = self._select_layer(train)
        if self.normaliser is not None:
            self.normaliser.fit(train)
        self.num_layers, self.feature_dim = train.num_layers, train.feature_dim
        report = self._fit(self._normalise(train), self._prepare(val))
        self.fitted = True
        return report

    def predict(self, data: SplitData) -> HeadOutput:
        if not self.fitted:
            raise RuntimeError(f"{type(self).__name__} is not fitted")
        _check_finite(data, "prediction")
        return self._predict(self._prepare(data))

    def predict_proba(self, data: SplitData) -> np.ndarray:
        return self.predict(data).probabilities

    def layer_weights(self) -> np.ndarray | None:
        return None

    # ------------------------------------------------------------------ preparation
    def _layer_index(self) -> int | None:
        layers = self.head_config.layers
        return layers if isinstance(layers, int) and not isinstance(layers, bool) else None

    def effective_head_config(self) -> HeadConfig:
        """The config the head is built with (for bundles): a chosen layer index becomes 0,
        because the estimator hands the head only that layer."""
        if self._layer_index() is None:
            return self.head_config
        return self.head_config.model_copy(update={"layers": 0})

    def _select_layer(self, data: SplitData) -> SplitData:
        index = self._layer_index()
        return data if index is None else data.select_layer(index)

    def _normalise(self, data: SplitData) -> SplitData:
        return data if self.normaliser is None else self.normaliser.transform(data)

    def _prepare(self, data: SplitData) -> SplitData:
        prepared = self._normalise(self._select_layer(data))
        if self.num_layers is not None and len(prepared) and (
                prepared.num_layers, prepared.feature_dim) != (self.num_layers, self.feature_dim):
            raise DataError(f"features have {prepared.num_layers} layers of dim {prepared.feature_dim}; "
                             f"the head was trained on {self.num_layers} of dim {self.feature_dim}")
        return prepared

    def refit_settings(self, report: FitReport) -> tuple[HeadConfig, TrainConfig, dict[str, Any]]:
        """Head and training configs with validation's choices fixed, for a refit on
        training + validation rows, and a record of what was fixed."""
        raise NotImplementedError(f"{type(self).__name__} cannot be refitted")

    # ------------------------------------------------------------------ subclasses
    @abstractmethod
    def _fit(self, train: SplitData, val: SplitData) -> FitReport: ...

    @abstractmethod
    def _predict(self, data: SplitData) -> HeadOutput: ...

    @abstractmethod
    def _save_head(self, directory: Path) -> None: ...

    @abstractmethod
    def _load_head(self, directory: Path) -> None: ...

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``estimator.json``, ``normaliser.npz`` (if any) and the head's weights."""
        if not self.fitted:
            raise RuntimeError("cannot save an estimator that is not fitted")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.normaliser is not None:
            self.normaliser.save(directory / "normaliser.npz")
        self._save_head(directory)
        write_json(directory / "estimator.json", {
            "kind": self.kind,
            "head_config": self.head_config.model_dump(mode="json"),
            "train_config": self.train_config.model_dump(mode="json"),
            "num_classes": self.num_classes,
            "class_names": self.class_names,
            "num_layers": self.num_layers,
            "feature_dim": self.feature_dim,
        })
        return directory


def epoch_refit_settings(estimator: Estimator, report: FitReport) -> tuple[HeadConfig, TrainConfig, dict[str, Any]]:
    """The refit of an epoch-trained estimator: retrain for the epoch count validation chose,
    keeping the last epoch (no early stop, no checkpoint; its log beside the fit's)."""
    epochs = int(report.best_epoch or estimator.train_config.epochs)
    log = estimator.train_config.log_path
    train_config = estimator.train_config.model_copy(update={
        "epochs": epochs, "patience": None, "checkpoint": "last", "refit": False, "checkpoint_path": None,
        "log_path": None if log is None else log.with_name(log.stem + ".refit" + log.suffix)})
    return estimator.head_config, train_config, {"epochs": epochs}


def build_estimator(head_config: HeadConfig, train_config: TrainConfig, num_classes: int,
                    class_names: list[str] | None = None, kind: str | None = None) -> Estimator:
    """The estimator registered (:data:`~polyemo.train.registry.ESTIMATORS`) under ``kind``,
    by default the one the head names (a torch :class:`~polyemo.train.trainer.Trainer`, a
    :class:`~polyemo.train.classical.ClassicalEstimator`, ...)."""
    kind = kind or estimator_kind(head_config.name)
    if kind == "torch" and getattr(train_config, "adversarial", 0.0) > 0:
        kind = "domain-adversarial"  # a gradient-reversal corpus head (polyemo.train.domain)
    factory = ESTIMATORS.get(kind)
    return factory(head_config, train_config, num_classes, class_names)


def fit_and_refit(head_config: HeadConfig, train_config: TrainConfig, num_classes: int,
                  class_names: list[str] | None, train: SplitData, val: SplitData,
                  callbacks: Sequence = ()) -> tuple[Estimator, FitReport, dict[str, Any] | None]:
    """Fit on ``train`` choosing on ``val``; then, with ``train_config.refit``, train a fresh
    estimator with those choices fixed on ``train + val`` (the one returned).

    The returned report is the SELECTION fit's (its validation curve and scores, and the
    receipt that opens the test split); the third value records the refit (None without).
    """
    estimator = build_estimator(head_config, train_config, num_classes, class_names)
    if callbacks:
        if not hasattr(estimator, "callbacks"):
            raise ValueError(f"{type(estimator).__name__} takes no callbacks")
        estimator.callbacks.extend(callbacks)
    report = estimator.fit(train, val)
    if not train_config.refit or len(val) == 0:
        return estimator, report, None
    refit_head, refit_train, fixed = estimator.refit_settings(report)
    refitted = build_estimator(refit_head, refit_train, num_classes, class_names, kind=estimator.kind)
    both = SplitData.concat([train, val])
    refitted.fit(both, both)  # nothing is chosen on the second argument (fixed settings)
    return refitted, report, {"n_rows": len(both), "n_train": len(train), "n_validation": len(val), **fixed}


def load_estimator(directory: str | os.PathLike[str]) -> Estimator:
    """The estimator saved by :meth:`Estimator.save` in ``directory``, ready to predict."""
    directory = Path(directory)
    meta_path = directory / "estimator.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"{meta_path}: no saved estimator here")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    estimator = build_estimator(HeadConfig(**meta["head_config"]), TrainConfig(**meta["train_config"]),
                                meta["num_classes"], meta["class_names"], kind=meta.get("kind") or None)
    estimator.num_layers, estimator.feature_dim = meta["num_layers"], meta["feature_dim"]
    if (directory / "normaliser.npz").exists():
        estimator.normaliser = Normaliser.load(directory / "normaliser.npz")
    estimator._load_head(directory)
    estimator.fitted = True
    return estimator
