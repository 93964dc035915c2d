"""Ensemble rules on hand-made member probabilities: votes, ties, averaging, fitted rules."""

from __future__ import annotations

import numpy as np
import pytest

from polyemo.ensemble import RULES, align_classes, build_rule, load_rule


def onehot(classes: list[int], num: int = 3, p: float = 0.8) -> np.ndarray:
    out = np.full((len(classes), num), (1 - p) / (num - 1))
    out[np.arange(len(classes)), classes] = p
    return out


def test_registry_lists_every_rule():
    assert {"vote", "mean", "weighted", "stacking"} <= set(RULES.names())
    assert RULES.get("majority") is RULES.get("vote")


def test_majority_without_ties_ignores_the_tiebreak():
    a, b, c = onehot([0, 1, 2]), onehot([0, 1, 1]), onehot([1, 1, 2])
    rule = build_rule("vote", ["a", "b", "c"], tiebreak="c").fit([a, b, c], np.array([0, 1, 2]))
    out = rule.combine([a, b, c])
    assert out.predictions.tolist() == [0, 1, 2]
    assert np.allclose(out.probabilities.sum(axis=1), 1)
    assert (out.probabilities.argmax(axis=1) == out.predictions).all()
    assert out.probabilities[0, 0] == pytest.approx(2 / 3, abs=1e-5)


def test_a_named_member_breaks_ties_among_the_tied_classes_only():
    # 4 members: row 0 ties 2-2 between classes 0 and 1; "d" (the tie-breaker) voted 1.
    a, b, c, d = onehot([0, 2]), onehot([0, 2]), onehot([1, 1]), onehot([1, 0])
    rule = build_rule("vote", list("abcd"), tiebreak="d").fit([a, b, c, d], np.array([0, 0]))
    assert rule.combine([a, b, c, d]).predictions.tolist() == [1, 2]  # row 1: 2-1-1, no tie
    rule = build_rule("vote", list("abcd"), tiebreak="member:a").fit([a, b, c, d], np.array([0, 0]))
    assert rule.combine([a, b, c, d]).predictions.tolist()[0] == 0
    # three-way tie with the breaker's own vote: the breaker decides
    x, y, z = onehot([0]), onehot([1]), onehot([2])
    rule = build_rule("vote", ["x", "y", "z"], tiebreak="z").fit([x, y, z], np.array([0]))
    assert rule.combine([x, y, z]).predictions.tolist() == [2]


def test_a_tiebreak_member_outside_the_tie_picks_its_most_probable_tied_class():
    # 5 members, votes 2-2-1: the breaker voted the single class 2; among the tied {0, 1}
    # it gives class 1 the higher probability.
    breaker = np.array([[0.3, 0.35, 0.35 + 1e-3]])
    breaker = breaker / breaker.sum()
    members = [onehot([0]), onehot([0]), onehot([1]), onehot([1]), breaker]
    rule = build_rule("vote", list("abcde"), tiebreak="e").fit(members, np.array([0]))
    assert rule.combine(members).predictions.tolist() == [1]


def test_confidence_breaks_ties_by_the_most_confident_vote():
    a = np.array([[0.6, 0.3, 0.1]])
    b = np.array([[0.2, 0.7, 0.1]])
    rule = build_rule("vote", ["a", "b"], tiebreak="confidence").fit([a, b], np.array([0]))
    assert rule.combine([a, b]).predictions.tolist() == [1]
    assert rule.combine([np.array([[0.9, 0.05, 0.05]]), b]).predictions.tolist() == [0]


def test_best_on_validation_chooses_the_tiebreaker_on_validation_rows_only():
    truth = np.array([0, 1, 2, 0, 1, 2])
    good = onehot(truth.tolist())                 # 100 % on validation
    bad = onehot([1, 2, 0, 1, 2, 0])              # 0 %
    mid = onehot([0, 2, 0, 0, 2, 0])              # some
    rule = build_rule("vote", ["bad", "mid", "good"]).fit([bad, mid, good], truth)
    assert rule.learned["tiebreak_member"] == "good"
    assert rule.learned["validation_ua"]["good"] == 1.0
    # test rows: a three-way tie goes to the validation-best member
    test = [onehot([0]), onehot([1]), onehot([2])]
    assert rule.combine(test).predictions.tolist() == [2]
    # fitted on other validation rows, another member breaks the tie
    rule = build_rule("vote", ["bad", "mid", "good"]).fit([good, mid, bad], truth)
    assert rule.learned["tiebreak_member"] == "bad"
    assert rule.combine(test).predictions.tolist() == [0]


def test_vote_rejects_an_unknown_tiebreak():
    with pytest.raises(ValueError, match="tiebreak 'zz'"):
        build_rule("vote", ["a", "b"], tiebreak="zz")


def test_mean_averages_probabilities():
    a = np.array([[0.7, 0.3], [0.4, 0.6]])
    b = np.array([[0.2, 0.8], [0.45, 0.55]])
    out = build_rule("mean", ["a", "b"]).fit([a, b], np.array([0, 1])).combine([a, b])
    assert np.allclose(out.probabilities, (a + b) / 2)
    assert out.predictions.tolist() == [1, 1]


def test_weighted_average_learns_to_trust_the_member_that_is_right_on_validation():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, 300)
    good = onehot(truth.tolist(), p=0.7)
    noise = rng.dirichlet(np.ones(3), 300)
    rule = build_rule("weighted", ["noise", "good"]).fit([noise, good], truth)
    weights = rule.learned["weights"]
    assert weights["good"] > 0.9 and abs(sum(weights.values()) - 1) < 1e-9
    # weights swap when the validation says the other member is the good one
    swapped = build_rule("weighted", ["good", "noise"]).fit([noise, good], truth)
    assert swapped.learned["weights"]["noise"] > 0.9  # names follow positions: "noise" is now the good array
    out = rule.combine([noise, good])
    assert (out.predictions == truth).mean() > 0.95


def test_stacking_learns_a_permuted_member_from_validation():
    # member a is always right up to a fixed relabelling: stacking learns it, voting cannot
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 3, 240)
    permuted = onehot(((truth + 1) % 3).tolist(), p=0.9)
    noise = rng.dirichlet(np.ones(3), 240)
    rule = build_rule("stacking", ["a", "b"]).fit([permuted, noise], truth)
    test_truth = rng.integers(0, 3, 60)
    out = rule.combine([onehot(((test_truth + 1) % 3).tolist(), p=0.9), rng.dirichlet(np.ones(3), 60)])
    assert (out.predictions == test_truth).mean() > 0.95
    assert np.allclose(out.probabilities.sum(axis=1), 1)


def test_stacking_gives_a_class_absent_from_validation_zero():
    truth = np.array([0, 1] * 20)
    a, b = onehot(truth.tolist()), onehot(truth.tolist(), p=0.6)
    rule = build_rule("stacking", ["a", "b"]).fit([a, b], truth)
    out = rule.combine([onehot([2, 0]), onehot([2, 1])])
    assert (out.probabilities[:, 2] == 0).all()


def test_fitted_rules_round_trip_through_their_state():
    rng = np.random.default_rng(2)
    truth = rng.integers(0, 3, 90)
    members = [rng.dirichlet(np.ones(3), 90) for _ in range(3)]
    test = [rng.dirichlet(np.ones(3), 20) for _ in range(3)]
    for name in ("vote", "mean", "weighted", "stacking"):
        rule = build_rule(name, ["a", "b", "c"]).fit(members, truth)
        import json

        again = load_rule(json.loads(json.dumps(rule.state())))
        assert np.allclose(again.combine(test).probabilities, rule.combine(test).probabilities)


def test_unlabelled_validation_rows_are_left_out_and_shapes_are_checked():
    a, b = onehot([0, 1, 2]), onehot([0, 1, 2])
    rule = build_rule("vote", ["a", "b"]).fit([a, b], np.array([0, -1, 2]))
    assert rule.learned["n_validation"] == 2
    with pytest.raises(ValueError, match="one shape"):
        rule.combine([a, b[:2]])
    with pytest.raises(ValueError, match="at least two members"):
        build_rule("mean", ["a"])


def test_align_classes_reorders_by_name():
    p = np.array([[0.1, 0.9]])
    assert align_classes(p, ["sad", "angry"], ["angry", "happy", "sad"]).tolist() == [[0.9, 0.0, 0.1]]
    with pytest.raises(ValueError, match="not among"):
        align_classes(p, ["sad", "calm"], ["angry", "sad"])
