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


# ----------------------------------------------------- intervals of fold means, strata, pairs


def _speaker_folds(n_folds: int, speakers: int, per_speaker: int, accuracy: float, seed: int, n_classes: int = 4):
    """Folds of ``speakers`` test speakers each; every speaker is recognised well or badly."""
    rng = np.random.default_rng(seed)
    folds = []
    for k in range(n_folds):
        spk = np.repeat(np.arange(speakers), per_speaker)
        good = rng.random(speakers) < accuracy
        y_true = rng.integers(0, n_classes, spk.size)
        hit = rng.random(spk.size) < np.where(good, 0.9, 0.3)[spk]
        y_pred = np.where(hit, y_true, (y_true + 1) % n_classes)
        folds.append(FoldPredictions(y_true=y_true, y_pred=y_pred, name=f"f{k}", groups=[f"f{k}s{s}" for s in spk]))
    return folds


def test_every_headline_interval_contains_its_estimate():
    folds = _speaker_folds(5, 4, 30, 0.6, seed=1)
    agg = aggregate_folds(folds, ["a", "b", "c", "d"], n_boot=1000)
    for name, stat in agg.mean_of_folds.items():
        assert stat.ci is not None and stat.ci.low < stat.mean < stat.ci.high, name
        assert stat.ci.value == stat.mean and stat.ci.unit == "group" and stat.ci.n_units == 20
        assert stat.ci.method == "speaker-cluster bootstrap within folds" and stat.ci.n_strata == 5
        ci = agg.pooled.ci[name]
        assert ci.low < getattr(agg.pooled, name) < ci.high
    text = agg.to_markdown()
    assert "mean_of_folds CI" in text and "95 % speaker-cluster bootstrap within folds (1000 resamples)" in text
    assert "classes scored: 4 (a, b, c, d)" in text
    assert FoldAggregate.model_validate_json(agg.to_json()) == agg
    # regression folds get an interval of their mean too
    rng = np.random.default_rng(2)
    reg_folds = []
    for k in range(3):
        x = rng.normal(size=(60, 2))
        reg_folds.append((x, x + rng.normal(scale=0.5, size=(60, 2)), [f"r{k}s{i % 5}" for i in range(60)]))
    reg = aggregate_folds(reg_folds, dims=["arousal", "valence"], n_boot=500)
    for name in ("ccc_arousal", "mae_valence", "mean_ccc"):
        stat = reg.mean_of_folds[name]
        assert stat.ci.low < stat.mean < stat.ci.high, name


def test_cluster_bootstrap_keeps_speakers_whole():
    # 20 speakers x 10 utterances; speaker 0 is always wrong, everyone else always right.
    from polyemo.metrics import _groups_codes, _resampled_confusions

    speakers = np.repeat(np.arange(20), 10)
    y_true = np.tile([0, 1], 100)
    y_pred = np.where(speakers == 0, 1 - y_true, y_true)
    confusions = _resampled_confusions(y_true, y_pred, 2, _groups_codes(speakers, 200), 500, np.random.default_rng(0))
    errors = confusions[:, 0, 1] + confusions[:, 1, 0]
    assert np.all(confusions.sum(axis=(1, 2)) == 200)  # equal-sized speakers: every resample has 200 rows
    assert np.all(errors % 10 == 0)  # the wrong speaker comes in whole or not at all
    assert set(np.unique(errors)) >= {0.0, 10.0, 20.0}
    by_speaker = bootstrap_ci(y_true, y_pred, "wa", n=2000, groups=speakers)
    by_utterance = bootstrap_ci(y_true, y_pred, "wa", n=2000)
    assert by_speaker.value == by_utterance.value == pytest.approx(0.95)
    # K ~ Binomial(20, 1/20) draws of the wrong speaker: sd of WA 0.049 against 0.015 for utterances
    assert (by_speaker.high - by_speaker.low) > 2 * (by_utterance.high - by_utterance.low)
    assert by_speaker.low == pytest.approx(0.85) and by_speaker.high == pytest.approx(1.0)


def test_fold_mean_bootstrap_on_known_data():
    from polyemo.metrics import _FoldResampler

    # fold A: 4 speakers, all right (WA 1 in every resample). fold B: 4 speakers of 5 utterances,
    # two all right, two all wrong: WA_B = K / 4 with K ~ Binomial(4, 1/2) speakers drawn right.
    spk = np.repeat(np.arange(4), 5)
    y = np.tile([0, 1, 0, 1, 0], 4)
    fold_a = FoldPredictions(y_true=y, y_pred=y, name="A", groups=[f"a{s}" for s in spk])
    fold_b = FoldPredictions(y_true=y, y_pred=np.where(spk < 2, y, 1 - y), name="B", groups=[f"b{s}" for s in spk])
    agg = aggregate_folds([fold_a, fold_b], ["x", "y"], n_boot=4000, seed=3)
    wa = agg.mean_of_folds["wa"]
    assert wa.mean == pytest.approx(0.75) and wa.values == pytest.approx([1.0, 0.5])
    # P(K = 0) = 1/16 > 2.5 %: the interval spans the whole support, 0.5 .. 1.0
    assert (wa.ci.low, wa.ci.high) == pytest.approx((0.5, 1.0))
    resampler = _FoldResampler([np.asarray(spk), np.asarray(spk)], [20, 20], 4000, seed=3)
    samples = resampler.classification([y, y], [y, np.where(spk < 2, y, 1 - y)], 2)["wa"]
    values, counts = np.unique(np.round(samples, 6), return_counts=True)
    assert values.tolist() == [0.5, 0.625, 0.75, 0.875, 1.0]
    np.testing.assert_allclose(counts / 4000, np.array([1, 4, 6, 4, 1]) / 16, atol=0.025)
    # a perfect fold alone never varies
    alone = aggregate_folds([fold_a], ["x", "y"], n_boot=200)
    assert (alone.mean_of_folds["ua"].ci.low, alone.mean_of_folds["ua"].ci.high) == (1.0, 1.0)
    # a fold with one test speaker resamples its utterances instead (and says so)
    single = FoldPredictions(y_true=y, y_pred=np.where(spk < 2, y, 1 - y), name="C", groups=["c0"] * 20)
    mixed = aggregate_folds([fold_a, single], ["x", "y"], n_boot=500)
    assert mixed.mean_of_folds["wa"].ci.unit == "mixed" and mixed.mean_of_folds["wa"].ci.n_units == 4 + 20
    assert "utterances in the 1 of 2 folds with one test speaker" in mixed.mean_of_folds["wa"].ci.method
    assert 0.5 < mixed.mean_of_folds["wa"].ci.high - mixed.mean_of_folds["wa"].ci.low + 0.5 < 1.0
    none = aggregate_folds([(y, y), (y, 1 - y)], ["x", "y"], n_boot=100)
    assert none.mean_of_folds["wa"].ci.unit == "utterance"


def test_pooled_strata_keep_each_corpus_whole():
    # corpus A: 5 speakers always right; corpus B: 5 speakers always wrong; equal sizes.
    spk = np.repeat(np.arange(10), 8)
    y_true = np.tile([0, 1], 40)
    y_pred = np.where(spk < 5, y_true, 1 - y_true)
    corpus = np.where(spk < 5, "A", "B")
    free = evaluate_classification(y_true, y_pred, ["x", "y"], groups=spk, n_boot=500)
    kept = evaluate_classification(y_true, y_pred, ["x", "y"], groups=spk, strata=corpus, n_boot=500,
                                   strata_name="test corpora")
    assert free.ci["wa"].high - free.ci["wa"].low > 0.3
    assert kept.ci["wa"].low == kept.ci["wa"].high == pytest.approx(0.5)  # half the rows are A in every resample
    assert kept.ci["wa"].n_strata == 2 and kept.ci["wa"].n_units == 10
    assert kept.ci["wa"].method == "speaker-cluster bootstrap, speakers resampled within each of 2 test corpora"
    # strata of one speaker each (leave-one-speaker-out folds) are resampled together, not frozen
    loso = evaluate_classification(y_true, y_pred, ["x", "y"], groups=spk, strata=spk, n_boot=500)
    assert loso.ci["wa"].high - loso.ci["wa"].low > 0.3
    # unknown speakers are clusters of one row each, not one big speaker
    unknown = bootstrap_ci(y_true, y_pred, "wa", n=10, groups=["unknown"] * 80)
    assert unknown.n_units == 80


def test_paired_difference_of_a_cell_with_itself_is_exactly_zero():
    from polyemo.metrics import paired_difference

    folds = _speaker_folds(4, 5, 12, 0.5, seed=5)
    ci = paired_difference(folds, folds, ["a", "b", "c", "d"], "ua", n_boot=1000)
    assert ci.value == 0.0 and ci.low == 0.0 and ci.high == 0.0 and not ci.excludes_zero
    assert ci.method == "paired speaker-cluster bootstrap within folds"


def test_paired_interval_of_a_clearly_better_cell_excludes_zero_and_is_seeded():
    from polyemo.metrics import paired_difference

    labels = ["a", "b", "c", "d"]
    worse = _speaker_folds(4, 5, 12, 0.3, seed=6)
    rng = np.random.default_rng(0)
    better = [f.model_copy(update={"y_pred": np.where(rng.random(len(f.y_true)) < 0.5, f.y_true, f.y_pred)}) for f in worse]
    ci = paired_difference(better, worse, labels, "ua", n_boot=1000, seed=1)
    gap = aggregate_folds(better, labels, n_boot=0).mean_of_folds["ua"].mean - aggregate_folds(worse, labels, n_boot=0).mean_of_folds["ua"].mean
    assert ci.value == pytest.approx(gap) and gap > 0.1
    assert 0 < ci.low < ci.value < ci.high and ci.excludes_zero
    # pairing removes the speakers' shared difficulty: the difference is known far better than either score
    alone = aggregate_folds(better, labels, n_boot=1000, seed=1).mean_of_folds["ua"].ci
    assert ci.high - ci.low < alone.high - alone.low
    reverse = paired_difference(worse, better, labels, "ua", n_boot=1000, seed=1)
    assert (reverse.low, reverse.high) == pytest.approx((-ci.high, -ci.low))  # same resamples
    assert paired_difference(better, worse, labels, "ua", n_boot=1000, seed=1) == ci
    assert paired_difference(better, worse, labels, "ua", n_boot=1000, seed=2) != ci
    assert aggregate_folds(better, labels, n_boot=300, seed=4) == aggregate_folds(better, labels, n_boot=300, seed=4)
    with pytest.raises(ValueError, match="same rows"):
        paired_difference(better, worse[::-1], labels)


def test_fold_mean_bootstrap_is_fast():
    import time

    folds = _speaker_folds(10, 6, 134, 0.5, seed=9, n_classes=7)  # about 8,000 rows
    labels = list("abcdefg")
    started = time.perf_counter()
    aggregate_folds(folds, labels, n_boot=1000)
    assert time.perf_counter() - started < 3.0
