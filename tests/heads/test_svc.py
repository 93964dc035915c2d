"""libsvm SVC heads: nkululeko's linear SVM, with ties broken by confidence and temperature-scaled probabilities."""

import numpy as np
import pytest
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from polyemo.heads import HEADS, HeadConfig, build_head
from polyemo.heads.classical import ClassMaskError


def _classes(n, seed, k=5, spread=2.5):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    centres = rng.normal(size=(k, 6)) * 2.0
    x = centres[y] + rng.normal(scale=spread, size=(n, 6))  # overlapping: the votes tie often
    return x * np.array([1.0, 50.0, 0.02, 1.0, 3.0, 1.0]), y


def test_svc_linear_is_libsvm_one_vs_one_with_confidence_tie_break():
    x, y = _classes(200, 0)
    xt, _ = _classes(300, 1)
    head = HEADS.get("svc_linear")(6, 5).fit(x, y)
    scaler = head.pipeline.named_steps["scale"]
    np.testing.assert_allclose(scaler.mean_, x.mean(0))  # scaling from the training rows only
    svm = head.pipeline.named_steps["classify"].calibrated_classifiers_[0].estimator
    assert isinstance(svm, SVC) and svm.kernel == "linear" and svm.C == 1.0 and svm.break_ties
    assert len(svm.dual_coef_[0]) == len(svm.support_)  # one machine per class pair, libsvm's layout
    reference = SVC(kernel="linear", C=1.0, break_ties=True).fit(scaler.transform(x), y)
    decision = reference.predict(scaler.transform(xt))
    probs = head.predict_proba(xt)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-9)
    np.testing.assert_array_equal(probs.argmax(1), decision)  # the most probable class is the SVC's vote
    plain = SVC(kernel="linear", C=1.0).fit(scaler.transform(x), y).predict(scaler.transform(xt))
    assert (plain != decision).any()  # ties exist here; plain libsvm gives them to the lowest class index


def test_svc_kernels_parameters_and_class_masks():
    x, y = _classes(120, 2, k=3, spread=0.5)
    head = build_head(HeadConfig(name="svc", params={"kernel": "rbf", "C": 10.0}), 1, 6, 3)
    assert head.kernel == "rbf" and head.Cs == [10.0]
    assert (head.fit(x, y).predict_proba(x).argmax(1) == y).mean() > 0.9
    with pytest.raises(ValueError, match="kernel"):
        HEADS.get("svc")(6, 3, kernel="cubic")
    with pytest.raises(ValueError, match="linear"):
        HEADS.get("svc_linear")(6, 3, kernel="rbf")
    masks = np.ones((len(y), 3), dtype=bool)
    masks[:60, 2] = False  # a corpus without class 2
    with pytest.raises(ClassMaskError):
        HEADS.get("svc_linear")(6, 3).fit(x, np.where(np.arange(len(y)) < 60, y % 2, y), masks=masks)
