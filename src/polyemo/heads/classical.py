"""Classical heads on pooled features: logistic regression, linear and RBF SVM.

Each is a scikit-learn Pipeline of a StandardScaler and the classifier, so scaling
statistics come from the training rows only. The scaler stays even after the estimator's
``global`` normaliser (:mod:`polyemo.train.normalise`): it standardises what the classifier
actually receives, after layer reduction (the mean of standardised layers, the classical
default, is not standardised: skipping it moved logreg probabilities by up to 0.15 on an
EmoDB LOSO fold), over the labelled rows only, and for every other normalisation it is the
only training-statistics scaling. Even where it is redundant (``global``, one layer, every
row labelled) the normaliser's float32 output makes skipping it not identical (1e-9 to
7e-9 on that fold for logreg / svm_linear / svc_linear), so results would change. ``C`` may be a list: each value is fitted and
the best on the validation split is kept (``selected_C``; ``validation_scores`` per C).
Rows with label -1 are dropped.

Class masks (``masks``: (N, classes) bool, True where the row's corpus can produce the
class, :func:`polyemo.labels.row_masks`): a corpus without "surprise" must not teach the
model "never surprise".

* ``logreg`` is :class:`MaskedLogisticRegression`: multinomial logistic regression fitted
  in torch with full-batch L-BFGS (strong Wolfe line search), float64, from zeros. Each
  row's softmax runs over its own corpus' classes only, so a row says nothing about the
  classes its corpus lacks. The objective is scikit-learn's: ``sum_i w_i CE_i +
  ||W||^2 / (2C)`` (intercepts unpenalised; ``w_i`` the balanced class weights or 1), and
  two classes use one score vector (a sigmoid) as scikit-learn does, so with all-true
  masks its probabilities are those of ``sklearn.linear_model.LogisticRegression``. It is
  a LogisticRegression subclass: ``coef_``/``intercept_``/``predict_proba`` are the usual
  ones, so bundles fold it into a linear head (:func:`polyemo.experiment.export.logreg_as_linear`).
* ``svm_linear`` and ``svm_rbf`` (Platt-calibrated by cross-validation on the training rows,
  ``CalibratedClassifierCV(..., ensemble=False)``, deterministic folds) cannot honour masks:
  they refuse training rows whose masks lack some of the training classes (a multi-corpus
  set whose corpora do not all have every class), with :class:`ClassMaskError`.

:class:`polyemo.train.classical.ClassicalEstimator` gives these heads the same
``fit``/``predict_proba`` interface as the torch heads.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import ClassVar, Literal

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.calibration import CalibratedClassifierCV
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.validation import validate_data

from polyemo.heads import HEADS

#: ``score(y_true, y_pred) -> float``, higher is better (e.g. macro-F1 on validation)
Scorer = Callable[[np.ndarray, np.ndarray], float]


class ClassMaskError(ValueError):
    """A head that cannot honour class masks was given rows whose masks lack classes."""


def missing_classes(masks: np.ndarray, y: np.ndarray, groups: Sequence[str] | None = None) -> dict[str, list[int]]:
    """Per group (corpus; else per distinct mask), the training classes (present in ``y``)
    that its rows' masks exclude. Groups that lack nothing are left out."""
    masks = np.asarray(masks, dtype=bool)
    present = np.unique(y[y >= 0])
    keys = [str(g) for g in groups] if groups is not None else [
        "rows with mask " + "".join("1" if v else "0" for v in row) for row in masks]
    out: dict[str, set[int]] = {}
    for key, row in zip(keys, masks):
        lacking = {int(c) for c in present if not row[c]}
        if lacking:
            out.setdefault(key, set()).update(lacking)
    return {k: sorted(v) for k, v in sorted(out.items())}


class MaskedLogisticRegression(LogisticRegression):
    """Multinomial logistic regression with per-row class masks, fitted by torch L-BFGS.

    ``fit(X, y, sample_weight=None, masks=None)``: ``masks`` (N, n_classes_total) bool over
    class *labels* (column ``c`` is label ``c``), or None (every row sees every class).
    Masked classes get logit -inf in that row's softmax (probability 0, no gradient).
    Everything else (``C``, ``class_weight``, ``max_iter``, ``tol``) means what it means for
    scikit-learn's lbfgs solver; ``tol`` bounds the largest gradient entry of the per-row
    mean objective. Prediction is unmasked: ``predict_proba`` is scikit-learn's.
    """

    #: float64: as fast as scikit-learn's lbfgs (7000 x 512, 7 classes: 0.8 s vs 0.8 s) and within 1e-5
    #: of its probabilities; float32 is 3-5x faster but stops ~1e-3 away from the optimum.
    precision: ClassVar[str] = "float64"

    def fit(self, X, y, sample_weight=None, masks=None):  # noqa: D102 (documented on the class)
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # small problems run fastest on one thread, and reproducibly
        try:
            return self._fit(torch, X, y, sample_weight, masks)
        finally:
            torch.set_num_threads(threads)

    def _fit(self, torch, X, y, sample_weight, masks):

        X, y = validate_data(self, X, y, dtype=np.float64, reset=True)
        self.classes_ = classes = np.unique(y)
        if len(classes) < 2:
            raise ValueError(f"{type(self).__name__}: needs at least two classes, got {classes.tolist()}")
        target = np.searchsorted(classes, y)
        n, k = len(y), len(classes)
        weight = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64).copy()
        if self.class_weight is not None:
            weight *= compute_class_weight(self.class_weight, classes=classes, y=y)[target]
        allowed = None
        if masks is not None:
            masks = np.asarray(masks, dtype=bool)
            if masks.shape[0] != n or masks.ndim != 2 or masks.shape[1] <= int(classes.max()):
                raise ValueError(f"masks must be (N={n}, >{int(classes.max())}) over class labels, got {masks.shape}")
            allowed = masks[:, classes.astype(np.int64)]
            if not allowed[np.arange(n), target].all():
                raise ValueError("a row's own class is masked out (its corpus cannot produce its label)")
            if allowed.all():
                allowed = None
        binary = k == 2  # one score vector, as scikit-learn: softmax(0, z) = sigmoid(z)
        rows = 1 if binary else k
        dtype = getattr(torch, self.precision)
        x_t = torch.from_numpy(np.ascontiguousarray(X)).to(dtype)
        t_t = torch.from_numpy(target.astype(np.int64))
        w_t = torch.from_numpy(weight / weight.sum()).to(dtype)  # mean form: (sum w CE)/S + ||W||^2/(2 C S)
        reg = 1.0 / (2.0 * float(self.C) * float(weight.sum()))
        blocked = None if allowed is None else torch.from_numpy(~allowed)
        coef = torch.zeros((rows, X.shape[1]), dtype=dtype, requires_grad=True)
        bias = torch.zeros(rows, dtype=dtype, requires_grad=True)
        params = [coef, bias] if self.fit_intercept else [coef]
        optimiser = torch.optim.LBFGS(params, lr=1.0, max_iter=int(self.max_iter), max_eval=int(self.max_iter) * 2,
                                      tolerance_grad=float(self.tol), tolerance_change=1e-14, history_size=20,
                                      line_search_fn="strong_wolfe")

        def objective() -> torch.Tensor:
            optimiser.zero_grad()
            logits = x_t @ coef.T + (bias if self.fit_intercept else 0.0)
            if binary:
                logits = torch.cat([torch.zeros((n, 1), dtype=dtype), logits], dim=1)
            if blocked is not None:
                logits = logits.masked_fill(blocked, float("-inf"))
            log_p = torch.log_softmax(logits, dim=1).gather(1, t_t[:, None])[:, 0]
            loss = -(w_t * log_p).sum() + reg * (coef * coef).sum()
            loss.backward()
            return loss

        optimiser.step(objective)
        state = optimiser.state[optimiser._params[0]]
        self.n_iter_ = np.array([int(state.get("n_iter", 0))])
        if self.n_iter_[0] >= self.max_iter:
            warnings.warn(f"{type(self).__name__}: L-BFGS stopped after max_iter={self.max_iter} iterations "
                          "before converging", ConvergenceWarning, stacklevel=2)
        self.coef_ = coef.detach().numpy().astype(np.float64)
        self.intercept_ = bias.detach().numpy().astype(np.float64) if self.fit_intercept else np.zeros(rows)
        return self


class ClassicalHead:
    """A scikit-learn classifier on (N, F) pooled features with training-only scaling."""

    input_kind: ClassVar[str] = "pooled"
    #: the estimator that trains it (``polyemo.train.registry.ESTIMATORS``)
    estimator: ClassVar[str] = "classical"
    #: whether fit honours per-row class masks (else it refuses incomplete masks)
    supports_masks: ClassVar[bool] = False

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
        #: the C the pipeline was fitted with (chosen on validation among several)
        self.selected_C: float | None = None
        self.validation_scores: dict[float, float] = {}

    def make_classifier(self, C: float, y: np.ndarray) -> BaseEstimator:
        raise NotImplementedError

    def make_pipeline(self, C: float, y: np.ndarray) -> Pipeline:
        return Pipeline([("scale", StandardScaler()), ("classify", self.make_classifier(C, y))])

    def fit(self, X: np.ndarray, y: np.ndarray, X_val: np.ndarray | None = None,
            y_val: np.ndarray | None = None, score: Scorer | None = None,
            masks: np.ndarray | None = None) -> ClassicalHead:
        """Fit on (X, y), choosing C on (X_val, y_val) by ``score`` when there are several.

        ``masks``: (N, num_classes) class masks of the training rows (None: all classes)."""
        masks = self._check_masks(masks, y)
        X, y, keep = self._labelled(X, y)
        masks = None if masks is None else masks[keep]
        if len(np.unique(y)) < 2:
            raise ValueError(f"{type(self).__name__}: training data has fewer than two classes")
        if masks is not None and not self.supports_masks:
            lacking = missing_classes(masks, y)
            if lacking:
                raise ClassMaskError(f"{type(self).__name__} cannot honour class masks, and {len(lacking)} groups of "
                                     f"training rows lack classes: {lacking}")
            masks = None
        fit_params = {} if masks is None else {"classify__masks": masks}
        if len(self.Cs) == 1:
            self.selected_C = self.Cs[0]
            self.pipeline = self.make_pipeline(self.selected_C, y).fit(X, y, **fit_params)
            return self
        if X_val is None or y_val is None or score is None:
            raise ValueError(f"{type(self).__name__}: choosing among C={self.Cs} needs validation data and a scorer")
        X_val, y_val, _ = self._labelled(X_val, y_val)
        best: tuple[float, float, Pipeline] | None = None
        for C in self.Cs:
            pipeline = self.make_pipeline(C, y).fit(X, y, **fit_params)
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

    def _check_masks(self, masks: np.ndarray | None, y: np.ndarray) -> np.ndarray | None:
        if masks is None:
            return None
        masks = np.asarray(masks, dtype=bool)
        if masks.shape != (len(y), self.num_classes):
            raise ValueError(f"{type(self).__name__}: masks must be (N={len(y)}, {self.num_classes}), got {masks.shape}")
        return masks

    def _labelled(self, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.int64)
        if X.ndim != 2 or len(X) != len(y):
            raise ValueError(f"{type(self).__name__}: need X (N, F) and y (N,), got {X.shape} and {y.shape}")
        if y.max(initial=-1) >= self.num_classes:
            raise ValueError(f"{type(self).__name__}: label {int(y.max())} >= num_classes {self.num_classes}")
        keep = y >= 0
        return X[keep], y[keep], keep

    def _calibration_folds(self, y: np.ndarray) -> int:
        smallest = int(np.bincount(y)[np.unique(y)].min())
        if smallest < 2:
            raise ValueError(f"{type(self).__name__}: probability calibration needs >= 2 training rows per class")
        return min(5, smallest)


@HEADS.register("logreg", "logistic_regression")
class LogisticRegressionHead(ClassicalHead):
    supports_masks = True

    # scikit-learn's default tolerance: 1e-7 took 5-10x the L-BFGS iterations on whisper
    # features (EmoDB, 390 x 1024: 300-1100 instead of 40-90) for no change in the predicted classes.
    def __init__(self, input_dim: int, num_classes: int, tol: float = 1e-4, **options) -> None:
        super().__init__(input_dim, num_classes, **options)
        self.tol = tol

    def make_classifier(self, C: float, y: np.ndarray) -> BaseEstimator:
        return MaskedLogisticRegression(C=C, class_weight=self.class_weight, max_iter=self.max_iter,
                                        tol=self.tol, random_state=self.seed)


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
