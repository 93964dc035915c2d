"""Adding an estimator is one file plus its registration.

This file is that file for a test-only estimator: nearest class centroid on pooled features
(layers averaged), probabilities a softmax of minus the squared distances. Everything else
-- normalisation fitted on the training rows, the sealed test split, the refit on training
+ validation, save/load -- comes from :class:`polyemo.train.Estimator` and runs unchanged.

In a module of :mod:`polyemo.train` the two registrations would be decorators on the classes
(``@HEADS.register("test_centroid")``, ``@ESTIMATORS.register("test_centroid")``); here a
fixture applies them and restores the registries afterwards, so no other test sees them.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from polyemo.heads import HEADS, HeadConfig
from polyemo.train import (
    ESTIMATORS,
    ClassicalEstimator,
    Estimator,
    FitReport,
    HeadOutput,
    Trainer,
    build_estimator,
    load_estimator,
    train_and_evaluate,
)
from polyemo.train.adapters import classification_scores
from polyemo.train.data import FitReceipt, SplitData
from polyemo.train.estimator import fit_and_refit
from polyemo.train.registry import estimator_kind

NAME = "test_centroid"


class NearestCentroidHead:
    """What a config names (``head: {name: test_centroid}``): pooled input, trained by the
    estimator registered under the same name. It has no weights of its own."""

    input_kind = "pooled"
    estimator = NAME


class NearestCentroidEstimator(Estimator):
    """One centroid per class of the (normalised, layer-averaged) training rows."""

    kind = NAME
    #: rows each fit saw (training, validation), for the tests
    fits: list[tuple[int, int]] = []

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.centroids: np.ndarray | None = None

    @staticmethod
    def _matrix(data: SplitData) -> np.ndarray:
        return np.asarray(data.features, dtype=np.float64).mean(axis=1)

    def _fit(self, train: SplitData, val: SplitData) -> FitReport:
        NearestCentroidEstimator.fits.append((len(train), len(val)))
        x, y = self._matrix(train), train.labels
        self.centroids = np.stack([x[y == c].mean(0) if (y == c).any() else np.full(x.shape[1], np.inf)
                                   for c in range(self.num_classes)])
        scores = classification_scores(val.labels, self._predict(val).probabilities, self.class_names)
        metric = self.train_config.selection_metric
        record = {"epoch": None, **{f"val_{k}": scores[k] for k in ("ua", "wa", "macro_f1")}}
        return FitReport(None, float(scores[metric]), [record], scores, FitReceipt(time.time(), None))

    def _predict(self, data: SplitData) -> HeadOutput:
        if len(data) == 0:
            return HeadOutput(np.zeros((0, self.num_classes)))
        distance = ((self._matrix(data)[:, None, :] - self.centroids[None]) ** 2).sum(-1)
        logits = -np.nan_to_num(distance, posinf=1e300)
        logits -= logits.max(axis=1, keepdims=True)
        probabilities = np.exp(logits)
        return HeadOutput(probabilities / probabilities.sum(axis=1, keepdims=True))

    def refit_settings(self, report: FitReport):
        """Nothing is chosen on validation: the refit recomputes the centroids on both splits."""
        return self.head_config, self.train_config.model_copy(update={"refit": False}), {"centroids": "recomputed"}

    def _save_head(self, directory: Path) -> None:
        np.save(directory / "centroids.npy", self.centroids)

    def _load_head(self, directory: Path) -> None:
        self.centroids = np.load(directory / "centroids.npy")


@pytest.fixture
def centroid_registered(monkeypatch):
    for registry in (HEADS, ESTIMATORS):
        registry.names()  # load the package's own entries first
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))  # restored after the test
    HEADS.register(NAME)(NearestCentroidHead)
    ESTIMATORS.register(NAME)(NearestCentroidEstimator)
    NearestCentroidEstimator.fits = []
    yield


def test_the_package_estimators_are_registered_by_their_own_modules():
    assert ESTIMATORS.get("torch") is Trainer and ESTIMATORS.get("classical") is ClassicalEstimator
    assert estimator_kind("linear") == "torch" and estimator_kind("attentive_stats") == "torch"
    assert estimator_kind("logreg") == "classical" and estimator_kind("svc_linear") == "classical"
    config = {"show_progress": False}
    from polyemo.train import TrainConfig

    assert isinstance(build_estimator(HeadConfig(name="frame_mlp"), TrainConfig(**config), 3), Trainer)
    assert isinstance(build_estimator(HeadConfig(name="svm_rbf"), TrainConfig(**config), 3), ClassicalEstimator)
    with pytest.raises(KeyError, match=r"unknown estimator 'no-such'; known: classical, .*torch") as error:
        build_estimator(HeadConfig(name="linear"), TrainConfig(**config), 3, kind="no-such")
    assert {"finetune", "dimensional", "domain-adversarial"} <= set(str(error.value).split("known: ")[1].strip("'\"").split(", "))


def test_a_new_estimator_runs_end_to_end_with_refit(centroid_registered, make_pooled, quick_config, tmp_path):
    train, val, test = make_pooled(90, 0), make_pooled(45, 1), make_pooled(45, 2)
    head = HeadConfig(name=NAME, layers=1)  # the informative layer, chosen by the base class
    config = quick_config(normalisation="global")
    assert type(build_estimator(head, config, 3)) is NearestCentroidEstimator

    result = train_and_evaluate(train, val, test, head, config, class_names=["a", "b", "c"])
    # selection fit on training rows, then the refit on training + validation rows
    assert NearestCentroidEstimator.fits == [(90, 45), (135, 135)]
    assert result.refit == {"n_rows": 135, "n_train": 90, "n_validation": 45, "centroids": "recomputed"}
    assert type(result.estimator) is NearestCentroidEstimator and result.estimator.normaliser is not None
    assert result.test_metrics["wa"] > 0.9 and result.probabilities.shape == (45, 3)
    np.testing.assert_allclose(result.probabilities.sum(1), 1.0)

    # save / load by the saved kind
    folder = result.estimator.save(tmp_path / "centroid")
    loaded = load_estimator(folder)
    assert type(loaded) is NearestCentroidEstimator
    np.testing.assert_array_equal(loaded.predict(test).probabilities, result.probabilities)


def test_without_refit_the_selection_fit_is_kept(centroid_registered, make_pooled, quick_config):
    estimator, report, refit = fit_and_refit(HeadConfig(name=NAME, layers=1), quick_config(refit=False), 3, None,
                                             make_pooled(60, 0), make_pooled(30, 1))
    assert refit is None and NearestCentroidEstimator.fits == [(60, 30)]
    assert report.val_metrics["wa"] > 0.9 and estimator.fitted


def test_the_registration_is_gone_after_the_fixture():
    assert NAME not in ESTIMATORS and NAME not in HEADS
