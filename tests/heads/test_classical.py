import numpy as np
import pytest

from polyemo.heads import HEADS, HeadConfig, build_head


def _blobs(n, seed, shift=0.0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    centres = np.array([[4, 0, 0, 0], [0, 4, 0, 0], [0, 0, 4, 0]], dtype=float)
    x = centres[y] + rng.normal(size=(n, 4)) + shift
    return x * np.array([1.0, 100.0, 0.01, 1.0]), y  # wildly different scales


@pytest.mark.parametrize("name", ["logreg", "svm_linear", "svm_rbf"])
def test_classical_heads_fit_and_predict(name):
    x, y = _blobs(90, 0)
    xt, yt = _blobs(60, 1)
    head = HEADS.get(name)(4, 3, class_weight="balanced")
    head.fit(x, y)
    probs = head.predict_proba(xt)
    assert probs.shape == (60, 3)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-9)
    assert (probs.argmax(1) == yt).mean() > 0.9
    scaler = head.pipeline.named_steps["scale"]
    np.testing.assert_allclose(scaler.mean_, x.mean(0))  # fitted on training rows only


def test_unlabelled_rows_dropped_and_absent_class_gets_zero_probability():
    x, y = _blobs(60, 0)
    y = y.copy()
    y[y == 2] = -1
    head = HEADS.get("logreg")(4, 4).fit(x, y)
    np.testing.assert_allclose(head.pipeline.named_steps["scale"].mean_, x[y >= 0].mean(0))
    probs = head.predict_proba(x)
    assert probs.shape == (60, 4) and (probs[:, 2:] == 0).all()


def test_C_is_chosen_on_validation():
    x, y = _blobs(60, 0)
    xv, yv = _blobs(30, 2)
    calls = []

    def score(true, pred):
        calls.append(len(true))
        return float((true == pred).mean()) + (0.5 if len(calls) == 2 else 0.0)  # make the 2nd C win

    head = HEADS.get("logreg")(4, 3, C=[0.01, 1.0, 100.0]).fit(x, y, xv, yv, score)
    assert head.selected_C == 1.0 and set(head.validation_scores) == {0.01, 1.0, 100.0}
    with pytest.raises(ValueError, match="validation"):
        HEADS.get("logreg")(4, 3, C=[0.1, 1.0]).fit(x, y)


def test_build_classical_head_from_config():
    head = build_head(HeadConfig(name="svm_rbf", layers="concat", params={"C": 2.0}), 3, 4, 5)
    assert head.input_dim == 12 and head.Cs == [2.0]
    assert HeadConfig(name="logreg").layer_mode() == "mean"
    with pytest.raises(ValueError, match="class_weight"):
        HEADS.get("logreg")(4, 3, class_weight="inverse")
