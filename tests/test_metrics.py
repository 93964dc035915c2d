"""Metrics against scikit-learn, hand-computed cases, bootstrap behaviour and fold aggregation."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from polyemo.labels import label_set
from polyemo.metrics import (
    ClassificationResult,
    FoldAggregate,
    FoldPredictions,
    RegressionResult,
    aggregate_folds,
    bootstrap_ci,
    classification_metrics,
    concordance_cc,
    evaluate_classification,
    evaluate_regression,
    regression_metrics,
)

LABELS = ["anger", "happiness", "neutral", "sadness", "fear"]


def noisy_predictions(n: int, n_classes: int, accuracy: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, n_classes, n)
    y_pred = np.where(rng.random(n) < accuracy, y_true, rng.integers(0, n_classes, n))
    return y_true, y_pred


# ------------------------------------------------------------------- classification


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classification_matches_sklearn_on_random_data(seed):
    rng = np.random.default_rng(seed)
    # Imbalanced classes so UA and WA differ.
    y_true = rng.choice(len(LABELS), size=400, p=[0.4, 0.3, 0.15, 0.1, 0.05])
    y_pred = np.where(rng.random(400) < 0.5, y_true, rng.integers(0, len(LABELS), 400))
    assert set(y_true) == set(range(len(LABELS)))
    m = classification_metrics(y_true, y_pred, LABELS)
    assert m["ua"] == pytest.approx(balanced_accuracy_score(y_true, y_pred), abs=1e-12)
    assert m["wa"] == pytest.approx(accuracy_score(y_true, y_pred), abs=1e-12)
    assert m["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"), abs=1e-12)
    assert m["ua"] != pytest.approx(m["wa"], abs=1e-6)
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=range(len(LABELS)))
    for i, row in enumerate(m["per_class"]):
        assert row["label"] == LABELS[i]
        assert row["precision"] == pytest.approx(precision[i])
        assert row["recall"] == pytest.approx(recall[i])
        assert row["f1"] == pytest.approx(f1[i])
        assert row["support"] == support[i]
    assert np.array_equal(m["confusion"], confusion_matrix(y_true, y_pred))


def test_hand_computed_three_classes():
    # confusion (rows true a, b, c): a [4 0 0], b [0 1 1], c [1 0 1]
    y_true = ["a", "a", "a", "a", "b", "b", "c", "c"]
    y_pred = ["a", "a", "a", "a", "b", "c", "a", "c"]
    m = classification_metrics(y_true, y_pred, ["a", "b", "c"])
    assert m["confusion"] == [[4, 0, 0], [0, 1, 1], [1, 0, 1]]
    # recalls 4/4, 1/2, 1/2 -> UA 2/3; 6 of 8 correct -> WA 0.75
    assert m["ua"] == pytest.approx(2 / 3)
    assert m["wa"] == pytest.approx(0.75)
    # precisions 4/5, 1/1, 1/2; F1 = 2tp/(support+predicted): 8/9, 2/3, 1/2
    assert [r["precision"] for r in m["per_class"]] == pytest.approx([0.8, 1.0, 0.5])
    assert [r["f1"] for r in m["per_class"]] == pytest.approx([8 / 9, 2 / 3, 0.5])
    assert m["macro_f1"] == pytest.approx(37 / 54)
    assert [r["support"] for r in m["per_class"]] == [4, 2, 2]
    assert [r["predicted"] for r in m["per_class"]] == [5, 1, 2]


def test_class_absent_from_reference_is_excluded_from_averages():
    # c never occurs in y_true but is predicted once (an error counted against a's recall).
    y_true = [0, 0, 1, 1]
    y_pred = [0, 2, 1, 1]
    result = evaluate_classification(y_true, y_pred, ["a", "b", "c"])
    assert result.evaluated_classes == ["a", "b"]
    assert result.ua == pytest.approx((0.5 + 1.0) / 2)
    assert result.wa == pytest.approx(0.75)
    assert result.macro_f1 == pytest.approx((2 / 3 + 1.0) / 2)
    c = result.per_class[2]
    assert math.isnan(c.recall) and c.f1 == 0.0 and c.precision == 0.0 and c.support == 0 and c.predicted == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert result.ua == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    assert result.macro_f1 == pytest.approx(f1_score(y_true, y_pred, labels=[0, 1], average="macro"))
    # Undefined values are null in JSON and NaN again after loading.
    text = result.to_json()
    assert json.loads(text)["per_class"][2]["recall"] is None
    loaded = ClassificationResult.from_json(text)
    assert math.isnan(loaded.per_class[2].recall) and loaded.ua == result.ua
    assert "absent: c" in result.to_markdown()


def test_never_predicted_class_has_undefined_precision_and_zero_f1():
    result = evaluate_classification([0, 1, 1], [0, 0, 0], ["a", "b"])
    b = result.per_class[1]
    assert math.isnan(b.precision) and b.recall == 0.0 and b.f1 == 0.0
    # recalls 1 and 0 -> UA 0.5; F1 a = 2*1/(1+3) = 0.5, b = 0 -> macro-F1 0.25
    assert result.ua == pytest.approx(0.5) and result.macro_f1 == pytest.approx(0.25)


def test_input_forms_agree():
    y_true, y_pred = noisy_predictions(60, 4, 0.5, seed=3)
    names = ["anger", "happiness", "neutral", "sadness"]
    by_index = classification_metrics(y_true, y_pred, names)
    by_name = classification_metrics([names[i] for i in y_true], [names[i] for i in y_pred], names)
    scores = np.eye(4)[y_pred] * 3.0 + 0.1
    by_scores = classification_metrics(y_true, scores, label_set("big4"))
    assert by_index == by_name == by_scores
    assert by_index["labels"] == names


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="-1 marks unlabelled"):
        classification_metrics([0, -1], [0, 1], ["a", "b"])
    with pytest.raises(ValueError, match="not in labels"):
        classification_metrics(["a", "x"], ["a", "b"], ["a", "b"])
    with pytest.raises(ValueError, match="rows"):
        classification_metrics([0, 1, 1], [0, 1], ["a", "b"])
    with pytest.raises(ValueError, match="no predictions"):
        classification_metrics([], [], ["a", "b"])


# ------------------------------------------------------------------------ regression


def test_ccc_hand_computed():
    y = np.array([1.0, 2.0, 3.0])  # mean 2, population variance 2/3
    assert concordance_cc(y, y) == pytest.approx(1.0)
    # shift by 1: 2*(2/3) / (2/3 + 2/3 + 1^2) = 4/7 while Pearson stays 1
    m = regression_metrics(y, y + 1.0, dims=["arousal"])["dims"]["arousal"]
    assert m["ccc"] == pytest.approx(4 / 7)
    assert m["pearson"] == pytest.approx(1.0)
    assert m["mae"] == pytest.approx(1.0)
    # negated: cov -2/3, means 2 and -2 -> 2*(-2/3) / (4/3 + 16) = -1/13
    m = regression_metrics(y, -y, dims=["valence"])["dims"]["valence"]
    assert m["ccc"] == pytest.approx(-1 / 13)
    assert m["pearson"] == pytest.approx(-1.0)
    assert m["mae"] == pytest.approx(4.0)
    # half scale, same mean: cov 1/3, var_p 1/6 -> (2/3) / (2/3 + 1/6) = 0.8
    assert concordance_cc(y, np.array([1.5, 2.0, 2.5])) == pytest.approx(0.8)
    # constant prediction: CCC 0, Pearson undefined
    m = regression_metrics(y, np.full(3, 2.0))["dims"]["arousal"]
    assert m["ccc"] == 0.0 and math.isnan(m["pearson"])


def test_regression_dims_and_nan_targets():
    y_true = {"arousal": [1.0, 2.0, np.nan, 3.0], "valence": [0.0, 1.0, 2.0, 3.0]}
    y_pred = {"arousal": [1.0, 2.0, 50.0, 3.0], "valence": [3.0, 2.0, 1.0, 0.0]}
    result = evaluate_regression(y_true, y_pred)
    assert list(result.dims) == ["arousal", "valence"]
    assert result.dims["arousal"].n == 3 and result.dims["arousal"].ccc == pytest.approx(1.0)
    # valence reversed around the same mean: CCC = Pearson = -1
    assert result.dims["valence"].ccc == pytest.approx(-1.0)
    assert result.mean_ccc == pytest.approx(0.0)
    # a dimension without any annotation is reported with n = 0 and left out of the mean
    unannotated = evaluate_regression(np.c_[[1.0, 2.0, 3.0], [np.nan] * 3], np.c_[[1.0, 2.0, 3.0], [0.0, 1.0, 2.0]])
    assert unannotated.dims["valence"].n == 0 and math.isnan(unannotated.dims["valence"].ccc)
    assert unannotated.mean_ccc == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    t = rng.normal(size=(50, 3))
    p = t + rng.normal(size=(50, 3))
    matrix = evaluate_regression(t, p)
    assert list(matrix.dims) == ["arousal", "valence", "dominance"]
    for j, dim in enumerate(matrix.dims):
        assert matrix.dims[dim].pearson == pytest.approx(np.corrcoef(t[:, j], p[:, j])[0, 1])
    assert "dominance" in matrix.to_markdown()
    assert RegressionResult.model_validate_json(matrix.to_json()) == matrix


# ------------------------------------------------------------------------- bootstrap


def test_bootstrap_contains_estimate_and_narrows_with_more_data():
    widths = {}
    for n in (200, 5000):
        y_true, y_pred = noisy_predictions(n, 4, 0.6, seed=n)
        for metric in ("ua", "wa", "macro_f1"):
            ci = bootstrap_ci(y_true, y_pred, metric, n=500, labels=["a", "b", "c", "d"])
            assert ci.low < ci.value < ci.high
            assert ci.n_valid == 500 and ci.unit == "utterance" and ci.n_units == n
            widths[metric, n] = ci.high - ci.low
    for metric in ("ua", "wa", "macro_f1"):
        # sqrt(5000/200) = 5: the interval shrinks about five-fold
        assert 3 < widths[metric, 200] / widths[metric, 5000] < 8
    rng = np.random.default_rng(1)
    x = rng.normal(size=3000)
    y = 0.7 * x + rng.normal(scale=0.7, size=3000)
    for metric in ("ccc", "pearson", "mae"):
        small = bootstrap_ci(x[:300], y[:300], metric, n=500)
        large = bootstrap_ci(x, y, metric, n=500)
        assert small.low < small.value < small.high and large.low < large.value < large.high
        assert large.high - large.low < 0.5 * (small.high - small.low)


def test_vectorised_bootstrap_equals_resample_by_resample():
    y_true, y_pred = noisy_predictions(300, 3, 0.5, seed=7)
    labels = [0, 1, 2]

    def ua(t, p):
        return balanced_accuracy_score(t, p)

    fast = bootstrap_ci(y_true, y_pred, "ua", n=200, labels=labels, seed=5)
    slow = bootstrap_ci(y_true, y_pred, ua, n=200, seed=5)
    assert fast.value == pytest.approx(slow.value)
    assert (fast.low, fast.high) == pytest.approx((slow.low, slow.high))


def test_bootstrap_is_seeded():
    y_true, y_pred = noisy_predictions(300, 3, 0.5, seed=8)
    a = bootstrap_ci(y_true, y_pred, "wa", n=100, seed=3)
    assert a == bootstrap_ci(y_true, y_pred, "wa", n=100, seed=3)
    assert a != bootstrap_ci(y_true, y_pred, "wa", n=100, seed=4)


def test_cluster_bootstrap_is_wider_when_speakers_are_correlated():
    # 40 speakers x 25 utterances; each speaker is recognised either well or badly.
    rng = np.random.default_rng(0)
    speakers = np.repeat(np.arange(40), 25)
    speaker_accuracy = np.where(rng.random(40) < 0.5, 0.95, 0.2)[speakers]
    y_true = rng.integers(0, 4, speakers.size)
    y_pred = np.where(rng.random(speakers.size) < speaker_accuracy, y_true, (y_true + 1) % 4)
    iid = bootstrap_ci(y_true, y_pred, "wa", n=1000)
    cluster = bootstrap_ci(y_true, y_pred, "wa", n=1000, groups=[f"spk{s}" for s in speakers])
    assert cluster.unit == "group" and cluster.n_units == 40
    assert cluster.low < cluster.value < cluster.high
    assert cluster.high - cluster.low > 2 * (iid.high - iid.low)
    # the same holds for CCC
    x = rng.normal(size=40)[speakers] + rng.normal(scale=0.3, size=speakers.size)
    y = x + rng.normal(size=40)[speakers]
    assert bootstrap_ci(x, y, "ccc", groups=speakers).high - bootstrap_ci(x, y, "ccc", groups=speakers).low > 2 * (
        bootstrap_ci(x, y, "ccc").high - bootstrap_ci(x, y, "ccc").low
    )


def test_bootstrap_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown metric"):
        bootstrap_ci([0, 1], [0, 1], "accuracy_ish")
    with pytest.raises(ValueError, match="alpha"):
        bootstrap_ci([0, 1], [0, 1], "wa", alpha=1.5)
    with pytest.raises(ValueError, match="groups"):
        bootstrap_ci([0, 1], [0, 1], "wa", groups=["s1"])


def test_evaluate_with_intervals_renders_markdown():
    y_true, y_pred = noisy_predictions(500, 5, 0.6, seed=11)
    result = evaluate_classification(y_true, y_pred, LABELS, n_boot=200)
    assert set(result.ci) == {"ua", "wa", "macro_f1"}
    assert result.ci["ua"].value == result.ua
    text = result.to_markdown()
    assert "UA (unweighted average recall)" in text and "WA (accuracy)" in text and "95% CI" in text
    assert f"| {100 * result.ua:.2f} |" in text


# ----------------------------------------------------------------------------- folds


def test_pooled_and_mean_of_folds_differ_when_they_must():
    # fold A: 2 of 2 correct (WA 1.0); fold B: 4 of 8 correct (WA 0.5)
    fold_a = FoldPredictions(y_true=[0, 1], y_pred=[0, 1], name="A")
    fold_b = FoldPredictions(y_true=[0, 0, 0, 0, 1, 1, 1, 1], y_pred=[0, 0, 1, 1, 1, 1, 0, 0], name="B")
    agg = aggregate_folds([fold_a, fold_b], ["neg", "pos"], n_boot=200)
    assert agg.fold_names == ["A", "B"]
    assert agg.mean_of_folds["wa"].mean == pytest.approx(0.75)
    assert agg.mean_of_folds["wa"].values == pytest.approx([1.0, 0.5])
    assert agg.mean_of_folds["wa"].std == pytest.approx(math.sqrt(0.125))  # ddof=1: sqrt(2 * 0.25^2)
    assert agg.pooled.wa == pytest.approx(6 / 10)
    assert agg.pooled.confusion == [[3, 2], [2, 3]]
    assert set(agg.pooled.ci) == {"ua", "wa", "macro_f1"}
    d = agg.to_dict()
    assert "mean_of_folds" in d and "pooled" in d
    text = agg.to_markdown()
    assert "mean_of_folds" in text and "pooled" in text
    assert FoldAggregate.model_validate_json(agg.to_json()).pooled.wa == agg.pooled.wa


def test_pooled_ccc_rewards_fold_offsets():
    # Within each fold the prediction is reversed (CCC -1), but pooled the folds' offsets dominate:
    # pooled means 5.5, variances 25.25, covariance 24.75 -> CCC = 49.5 / 50.5
    folds = [([0.0, 1.0], [1.0, 0.0]), ([10.0, 11.0], [11.0, 10.0])]
    agg = aggregate_folds(folds, dims=["arousal"], n_boot=100)
    assert agg.task == "regression"
    assert agg.mean_of_folds["ccc_arousal"].mean == pytest.approx(-1.0)
    assert agg.pooled.dims["arousal"].ccc == pytest.approx(49.5 / 50.5)
    assert agg.pooled.mean_ccc == pytest.approx(49.5 / 50.5)


def test_fold_groups_give_a_cluster_interval():
    folds = []
    for k in range(3):
        y_true, y_pred = noisy_predictions(90, 3, 0.6, seed=20 + k)
        folds.append({"y_true": y_true, "y_pred": y_pred, "groups": [f"f{k}s{i % 6}" for i in range(90)]})
    agg = aggregate_folds(folds, ["a", "b", "c"], n_boot=200)
    assert agg.pooled.ci["ua"].unit == "group" and agg.pooled.ci["ua"].n_units == 18
    assert agg.pooled.n == 270
    assert agg.fold_names == ["fold0", "fold1", "fold2"]
