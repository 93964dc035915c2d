"""Classical heads on pooled features: logistic regression, linear and RBF SVM (scikit-learn).

Each is a Pipeline of a StandardScaler and the classifier, so scaling statistics come from
the training rows only. SVM probabilities are Platt-calibrated by cross-validation on the
training rows (``CalibratedClassifierCV(..., ensemble=False)``, deterministic folds).
``C`` may be a list: each value is fitted and the best on the validation split is kept.
Class masks do not apply here (the classifiers have no per-row class masks); rows with
label -1 are dropped. :class:`polyemo.train.classical.ClassicalEstimator` gives these heads
the same ``fit``/``predict_proba`` interface as the torch heads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar, Literal

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC

from polyemo.heads import HEADS

#: ``score(y_true, y_pred) -> float``, higher is better (e.g. macro-F1 on validation)
Scorer = Callable[[np.ndarray, np.ndarray], float]


class ClassicalHead:
    """A scikit-learn classifier on (N, F) pooled features with training-only scaling."""

    input_kind: ClassVar[str] = "pooled"

    def __init__(self, input_dim: int, num_classes: int, C: float | Sequence[float] = 1.0,
                 class_weight: Literal["balanced"] | None = None, seed: int = 0, max_iter: int = 2000) -> None:
        if class_weight not in (None, "balanced"):
            raise ValueError(f"class_weight must be None or 'balanced', got {class_weight!r}")
        self.input_dim = input_dim
        self.num_classes = num_classes
        self.Cs = [float(c) for c in (C if isinstance(C, Sequence) and not isinstance(C, str) else [C])]
        if not self.Cs or any(c <= 0 for c in self.Cs):
            raise ValueError(f"C must be positive, got {C!r}")
        self.class_weight = class_weight
        self.seed = seed
        self.max_iter = max_iter
        self.pipeline: Pipeline | None = None
        self.selected_C: float | None = None
        self.validation_scores: dict[float, float] = {}

    def make_classifier(self, C: float, y: np.ndarray) -> BaseEstimator:
        raise NotImplementedError

    def make_pipeline(self, C: float, y: np.ndarray) -> Pipeline:
        return Pipeline([("scale", StandardScaler()), ("classify", self.make_classifier(C, y))])

    def fit(self, X: np.ndarray, y: np.ndarray, X_val: np.ndarray | None = None,
            y_val: np.ndarray | None = None, score: Scorer | None = None) -> ClassicalHead:
        X, y = self._labelled(X, y)
        if len(np.unique(y)) < 2:
            raise ValueError(f"{type(self).__name__}: training data has fewer than two classes")
        if len(self.Cs) == 1:
            self.selected_C = self.Cs[0]
            self.pipeline = self.make_pipeline(self.selected_C, y).fit(X, y)
            return self
        if X_val is None or y_val is None or score is None:
            raise ValueError(f"{type(self).__name__}: choosing among C={self.Cs} needs validation data and a scorer")
        X_val, y_val = self._labelled(X_val, y_val)
        best: tuple[float, float, Pipeline] | None = None
        for C in self.Cs:
            pipeline = self.make_pipeline(C, y).fit(X, y)
            value = float(score(y_val, self._predict(pipeline, X_val)))
            self.validation_scores[C] = value
            if best is None or value > best[0]:  # ties keep the earlier (listed first) C
                best = (value, C, pipeline)
        assert best is not None
        _, self.selected_C, self.pipeline = best
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """(N, num_classes) probabilities; classes absent from training get probability 0."""
        if self.pipeline is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted")
        X = np.asarray(X, dtype=np.float64)
        probs = self.pipeline.predict_proba(X)
        out = np.zeros((len(X), self.num_classes), dtype=np.float64)
        out[:, self.pipeline.classes_.astype(int)] = probs
        return out

    def _predict(self, pipeline: Pipeline, X: np.ndarray) -> np.ndarray:
        return pipeline.classes_[np.argmax(pipeline.predict_proba(X), axis=1)]

    def _labelled(self, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.int64)
        if X.ndim != 2 or len(X) != len(y):
            raise ValueError(f"{type(self).__name__}: need X (N, F) and y (N,), got {X.shape} and {y.shape}")
        if y.max(initial=-1) >= self.num_classes:
            raise ValueError(f"{type(self).__name__}: label {int(y.max())} >= num_classes {self.num_classes}")
        keep = y >= 0
        return X[keep], y[keep]

    def _calibration_folds(self, y: np.ndarray) -> int:
        smallest = int(np.bincount(y)[np.unique(y)].min())
        if smallest < 2:
            raise ValueError(f"{type(self).__name__}: probability calibration needs >= 2 training rows per class")
        return min(5, smallest)


@HEADS.register("logreg", "logistic_regression")
class LogisticRegressionHead(ClassicalHead):
    def make_classifier(self, C: float, y: np.ndarray) -> BaseEstimator:
        return LogisticRegression(C=C, class_weight=self.class_weight, max_iter=self.max_iter,
                                  random_state=self.seed)


@HEADS.register("svm_linear", "linear_svm")
class LinearSVMHead(ClassicalHead):
    def make_classifier(self, C: float, y: np.ndarray) -> BaseEstimator:
        svm = LinearSVC(C=C, class_weight=self.class_weight, max_iter=self.max_iter, random_state=self.seed)
        return CalibratedClassifierCV(svm, method="sigmoid", cv=self._calibration_folds(y), ensemble=False)


@HEADS.register("svm_rbf", "rbf_svm")
class RBFSVMHead(ClassicalHead):
    def __init__(self, input_dim: int, num_classes: int, gamma: float | str = "scale", **options) -> None:
        super().__init__(input_dim, num_classes, **options)
        self.gamma = gamma

    def make_classifier(self, C: float, y: np.ndarray) -> BaseEstimator:
        svm = SVC(C=C, kernel="rbf", gamma=self.gamma, class_weight=self.class_weight, random_state=self.seed)
        return CalibratedClassifierCV(svm, method="sigmoid", cv=self._calibration_folds(y), ensemble=False)
