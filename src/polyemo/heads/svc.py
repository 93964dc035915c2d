"""libsvm support vector classifier (scikit-learn ``SVC``): one-vs-one, any kernel.

``svc_linear`` is the classifier nkululeko runs for ``[MODEL] type = svm, kernel = linear``
(``sklearn.svm.SVC(kernel="linear")``): 21 pairwise machines for 7 classes and a vote, not
the one-vs-rest ``LinearSVC`` of ``svm_linear``. Two differences, both on purpose:

- Ties in the vote (frequent with 7 classes) go to the class with the largest summed
  pairwise confidence (``break_ties=True``), not to the lowest class index as in plain
  libsvm, which favours whichever class sorts first (EmoDB: anger).
- Probabilities come from temperature scaling of that decision function, fitted by
  cross-validation on the training rows (``CalibratedClassifierCV(method="temperature",
  ensemble=False)``, deterministic folds). One temperature keeps the order of the scores,
  so the most probable class is always the SVC's own decision, and the fitted model is the
  SVC on every training row (libsvm's ``probability=True`` instead refits 5 times and
  couples pairwise Platt estimates whose argmax can disagree with the vote).

Scaling statistics come from the training rows only (the :class:`ClassicalHead` pipeline).
Class masks are refused, as for the other SVM heads.
"""

from __future__ import annotations

import numpy as np
import sklearn
from sklearn.base import BaseEstimator
from sklearn.calibration import CalibratedClassifierCV
from sklearn.svm import SVC
from sklearn.utils.fixes import parse_version

from polyemo.heads import HEADS
from polyemo.heads.classical import ClassicalHead

KERNELS = ("linear", "rbf", "poly", "sigmoid")


#: CalibratedClassifierCV(method="temperature") arrived in scikit-learn 1.8
TEMPERATURE_SINCE = parse_version("1.8")


class SVCHead(ClassicalHead):
    """``SVC`` (libsvm, one-vs-one) with vote ties broken by confidence and temperature-scaled probabilities."""

    def __init__(self, input_dim: int, num_classes: int, kernel: str = "linear", gamma: float | str = "scale",
                 degree: int = 3, tol: float = 1e-3, **options) -> None:
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
        super().__init__(input_dim, num_classes, **options)
        self.kernel = kernel
        self.gamma = gamma
        self.degree = degree
        self.tol = tol

    def make_classifier(self, C: float, y: np.ndarray) -> BaseEstimator:
        if parse_version(sklearn.__version__) < TEMPERATURE_SINCE:
            raise RuntimeError(f"{type(self).__name__} needs scikit-learn >= 1.8 (temperature calibration); "
                               f"installed: {sklearn.__version__}")
        svm = SVC(C=C, kernel=self.kernel, gamma=self.gamma, degree=self.degree, tol=self.tol,
                  class_weight=self.class_weight, decision_function_shape="ovr", break_ties=True,
                  max_iter=-1, random_state=self.seed)
        return CalibratedClassifierCV(svm, method="temperature", cv=self._calibration_folds(y), ensemble=False)


@HEADS.register("svc_linear", "libsvm_linear")
class LinearSVCHead(SVCHead):
    """libsvm ``SVC(kernel="linear")``, one-vs-one (nkululeko's ``svm`` with ``kernel = linear``)."""

    def __init__(self, input_dim: int, num_classes: int, **options) -> None:
        if options.pop("kernel", "linear") != "linear":
            raise ValueError("svc_linear has a linear kernel; use head 'svc' for another")
        super().__init__(input_dim, num_classes, kernel="linear", **options)


HEADS.register("svc")(SVCHead)
