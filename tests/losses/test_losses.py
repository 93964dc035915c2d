"""Losses against values worked out by hand (with ``math``), not by calling the same code."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from polyemo.losses import LOSSES, build_loss, class_priors, class_weights, posthoc_logit_adjustment

E = math.e
# Row 1: logits (2, 1, 0), target 0.  Row 2: logits (0, 0, 0), target 2.
LOGITS = [[2.0, 1.0, 0.0], [0.0, 0.0, 0.0]]
TARGETS = [0, 2]
LSE1 = math.log(E**2 + E + 1)  # log-sum-exp of row 1
CE1 = LSE1 - 2.0  # = 0.40760596...
CE2 = math.log(3.0)
P1 = E**2 / (E**2 + E + 1)  # p_y of row 1 = 0.66524...
COUNTS = [30, 10, 60]  # priors 0.3, 0.1, 0.6


def logits(rows=LOGITS, grad: bool = False) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32, requires_grad=grad)


def targets(values=TARGETS) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long)


def value(loss) -> float:
    return float(loss.detach())


# --------------------------------------------------------------------------- helpers


def test_class_priors_and_weights_by_hand():
    assert class_priors(COUNTS) == pytest.approx([0.3, 0.1, 0.6])
    assert class_priors([0, 2], smoothing=1) == pytest.approx([0.25, 0.75])
    # inverse: 1/30, 1/10, 1/60 scaled to mean 1 -> 2/3, 2, 1/3
    assert class_weights(COUNTS, "inverse") == pytest.approx([2 / 3, 2.0, 1 / 3])
    # inverse sqrt of counts 1 and 4: 1 and 1/2, scaled to mean 1 -> 4/3, 2/3
    assert class_weights([1, 4], "inverse_sqrt") == pytest.approx([4 / 3, 2 / 3])
    # effective number, beta 0.9: (1-b)/(1-b^1) = 1 and (1-b)/(1-b^2) = 10/19 -> 38/29, 20/29
    assert class_weights([1, 2], "effective", beta=0.9) == pytest.approx([38 / 29, 20 / 29])
    assert class_weights(COUNTS, "none") == pytest.approx([1.0, 1.0, 1.0])
    # a class without examples gets weight 0; the others keep mean 1
    assert class_weights([10, 0, 10], "inverse") == pytest.approx([1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="scheme"):
        class_weights(COUNTS, "balanced-ish")
    with pytest.raises(ValueError, match="non-negative"):
        class_weights([3, -1])


# ---------------------------------------------------------------------- cross-entropy


def test_cross_entropy_by_hand():
    assert CE1 == pytest.approx(0.4076059644)
    assert value(build_loss("ce")(logits(), targets())) == pytest.approx((CE1 + CE2) / 2, rel=1e-6)
    assert value(build_loss("cross_entropy", reduction="sum")(logits(), targets())) == pytest.approx(CE1 + CE2, rel=1e-6)
    per_row = build_loss("ce", reduction="none")(logits(), targets())
    assert per_row.tolist() == pytest.approx([CE1, CE2], rel=1e-6)


def test_label_smoothing_by_hand():
    # -log p_c of row 1 = LSE1 - z_c: CE1, CE1 + 1, CE1 + 2 -> mean CE1 + 1
    eps = 0.1
    expected_row1 = (1 - eps) * CE1 + eps * (CE1 + 1.0)
    loss = build_loss("ce", label_smoothing=eps)(logits([LOGITS[0]]), targets([0]))
    assert value(loss) == pytest.approx(expected_row1, rel=1e-6)
    assert expected_row1 == pytest.approx(0.5076059644)
    # and torch's own implementation agrees without masks
    reference = torch.nn.functional.cross_entropy(logits(), targets(), label_smoothing=eps)
    assert value(build_loss("ce", label_smoothing=eps)(logits(), targets())) == pytest.approx(float(reference), rel=1e-6)


def test_weighted_cross_entropy_by_hand():
    # weights 2/3, 2, 1/3; rows have targets 0 and 2 -> (2/3 CE1 + 1/3 CE2) / (2/3 + 1/3)
    loss = build_loss("weighted_ce", class_counts=COUNTS)(logits(), targets())
    assert value(loss) == pytest.approx((2 * CE1 + CE2) / 3, rel=1e-6)
    explicit = build_loss("ce", weight=[2 / 3, 2.0, 1 / 3])(logits(), targets())
    assert value(explicit) == pytest.approx((2 * CE1 + CE2) / 3, rel=1e-6)
    reference = torch.nn.functional.cross_entropy(logits(), targets(), weight=torch.tensor([2 / 3, 2.0, 1 / 3]))
    assert value(loss) == pytest.approx(float(reference), rel=1e-6)


# ------------------------------------------------------------------------------ focal


def test_focal_by_hand():
    # gamma 2: (1 - p)^2 * CE per row; row 2 has p = 1/3
    expected = ((1 - P1) ** 2 * CE1 + (2 / 3) ** 2 * CE2) / 2
    assert value(build_loss("focal", gamma=2.0)(logits(), targets())) == pytest.approx(expected, rel=1e-6)
    assert (1 - P1) ** 2 * CE1 == pytest.approx(0.0456777, rel=1e-5)
    # gamma 0 is cross-entropy
    assert value(build_loss("focal", gamma=0.0)(logits(), targets())) == pytest.approx((CE1 + CE2) / 2, rel=1e-6)


def test_weighted_focal_by_hand():
    expected = (2 / 3 * (1 - P1) ** 2 * CE1 + 1 / 3 * (2 / 3) ** 2 * CE2) / (2 / 3 + 1 / 3)
    loss = build_loss("weighted_focal", class_counts=COUNTS, gamma=2.0)(logits(), targets())
    assert value(loss) == pytest.approx(expected, rel=1e-6)
    unweighted = build_loss("weighted_focal", class_counts=COUNTS, gamma=2.0, scheme="none")(logits(), targets())
    assert value(unweighted) == pytest.approx(value(build_loss("focal", gamma=2.0)(logits(), targets())), rel=1e-6)


# ------------------------------------------------------------------ prior-aware losses


def test_vs_loss_by_hand():
    # gamma = tau = 0: scales 1, offsets 0 -> cross-entropy
    plain = build_loss("vs", class_counts=COUNTS, gamma=0.0, tau=0.0)(logits(), targets())
    assert value(plain) == pytest.approx((CE1 + CE2) / 2, rel=1e-6)
    # gamma = tau = 1: Delta = n / n_max = (1/2, 1/6, 1); iota = log(0.3, 0.1, 0.6)
    z1 = [2 * 0.5 + math.log(0.3), 1 / 6 + math.log(0.1), 0 * 1.0 + math.log(0.6)]
    z2 = [math.log(0.3), math.log(0.1), math.log(0.6)]
    row1 = math.log(sum(math.exp(v) for v in z1)) - z1[0]
    row2 = math.log(sum(math.exp(v) for v in z2)) - z2[2]  # = -log 0.6
    loss = build_loss("vector_scaling", class_counts=COUNTS, gamma=1.0, tau=1.0)(logits(), targets())
    assert value(loss) == pytest.approx((row1 + row2) / 2, rel=1e-6)
    assert row2 == pytest.approx(-math.log(0.6))
    # with class weights 2/3, 2, 1/3
    weighted = build_loss("vs", class_counts=COUNTS, gamma=1.0, tau=1.0, scheme="inverse")(logits(), targets())
    assert value(weighted) == pytest.approx((2 * row1 + row2) / 3, rel=1e-6)


def test_logit_adjusted_loss_by_hand():
    # softmax of z + log prior: p_0 = 0.3 e^2 / (0.3 e^2 + 0.1 e + 0.6)
    p0 = 0.3 * E**2 / (0.3 * E**2 + 0.1 * E + 0.6)
    loss = build_loss("la", class_counts=COUNTS)(logits([LOGITS[0]]), targets([0]))
    assert value(loss) == pytest.approx(-math.log(p0), rel=1e-6)
    # tau = 0 is cross-entropy; tau = 2 squares the priors
    assert value(build_loss("logit_adjusted", class_counts=COUNTS, tau=0.0)(logits(), targets())) == pytest.approx(
        (CE1 + CE2) / 2, rel=1e-6
    )
    p0_tau2 = 0.09 * E**2 / (0.09 * E**2 + 0.01 * E + 0.36)
    tau2 = build_loss("logit_adjusted", class_counts=COUNTS, tau=2.0)(logits([LOGITS[0]]), targets([0]))
    assert value(tau2) == pytest.approx(-math.log(p0_tau2), rel=1e-6)
    with pytest.raises(ValueError, match="no examples"):
        build_loss("logit_adjusted", class_counts=[5, 0, 3])


def test_posthoc_logit_adjustment_shifts_argmax():
    raw = np.array([[1.0, 0.5], [3.0, 0.5]])
    priors = [0.9, 0.1]
    adjusted = posthoc_logit_adjustment(raw, priors, tau=1.0)
    # row 1: 1 - log 0.9 = 1.105 < 0.5 - log 0.1 = 2.803 -> flips to the rare class
    assert adjusted[0] == pytest.approx([1 - math.log(0.9), 0.5 - math.log(0.1)])
    assert adjusted.argmax(axis=1).tolist() == [1, 0]  # row 2's margin (2.5) survives
    assert raw.argmax(axis=1).tolist() == [0, 0]
    assert np.allclose(posthoc_logit_adjustment(raw, priors, tau=0.0), raw)
    # counts work like priors, and torch tensors like arrays
    as_torch = posthoc_logit_adjustment(torch.tensor(raw), [90, 10], tau=1.0)
    assert torch.allclose(as_torch, torch.tensor(adjusted))
    with pytest.raises(ValueError, match="classes"):
        posthoc_logit_adjustment(raw, [0.2, 0.3, 0.5])


def test_posthoc_adjustment_balances_a_skewed_bayes_classifier():
    # Two unit-variance Gaussians at -1 and +1 with priors 0.9 / 0.1. Bayes logits
    # log p(x|y) + log prior favour the majority; subtracting log prior gives the
    # balanced-error rule x > 0, which raises the rare class' recall.
    rng = np.random.default_rng(0)
    y = (rng.random(20000) < 0.1).astype(int)
    x = rng.normal(loc=np.where(y == 1, 1.0, -1.0))
    bayes = np.stack([-0.5 * (x + 1) ** 2 + math.log(0.9), -0.5 * (x - 1) ** 2 + math.log(0.1)], axis=1)

    def recalls(scores):
        pred = scores.argmax(axis=1)
        return [float(np.mean(pred[y == c] == c)) for c in (0, 1)]

    before = recalls(bayes)
    after = recalls(posthoc_logit_adjustment(bayes, [0.9, 0.1]))
    assert np.mean(after) > np.mean(before) + 0.1
    # the balanced rule is x > 0: recall of each class = Phi(1) = 0.841
    assert after == pytest.approx([0.8413, 0.8413], abs=0.02)


# ------------------------------------------------------------------ masks and ignoring

CLASSIFICATION_LOSSES = [
    ("ce", {}),
    ("ce", {"label_smoothing": 0.2}),
    ("weighted_ce", {"class_counts": COUNTS}),
    ("focal", {"gamma": 2.0}),
    ("weighted_focal", {"class_counts": COUNTS, "gamma": 1.0}),
    ("vs", {"class_counts": COUNTS, "gamma": 0.3, "tau": 1.0}),
    ("logit_adjusted", {"class_counts": COUNTS}),
]


def test_masked_cross_entropy_by_hand():
    # class 2 masked: p_0 = e^2 / (e^2 + e) -> loss log(1 + e^-1)
    a = math.log(1 + 1 / E)
    mask = torch.tensor([[True, True, False]])
    assert value(build_loss("ce")(logits([LOGITS[0]]), targets([0]), mask)) == pytest.approx(a, rel=1e-6)
    # smoothing spreads over the two allowed classes: -log p_1 = a + 1 -> eps * 0.5 more
    smoothed = build_loss("ce", label_smoothing=0.1)(logits([LOGITS[0]]), targets([0]), mask)
    assert value(smoothed) == pytest.approx(a + 0.05, rel=1e-6)


@pytest.mark.parametrize("name,params", CLASSIFICATION_LOSSES)
def test_masked_logit_neither_rewards_nor_penalises(name, params):
    loss_fn = build_loss(name, **params)
    mask = torch.tensor([[True, True, False], [True, False, True], [False, True, True]])
    base = [[2.0, 1.0, 0.0], [0.5, 0.0, -1.0], [0.0, 3.0, 1.0]]
    target = targets([1, 0, 2])
    values = []
    for masked_value in (-50.0, 0.0, 7.0, 80.0):
        rows = [row.copy() for row in base]
        rows[0][2] = rows[1][1] = rows[2][0] = masked_value
        z = logits(rows, grad=True)
        loss = loss_fn(z, target, mask)
        loss.backward()
        values.append(value(loss))
        assert torch.isfinite(z.grad).all()
        assert z.grad[~mask].abs().max() == 0.0  # no gradient into impossible classes
        assert z.grad[mask].abs().max() > 0.0
    assert values == pytest.approx([values[0]] * 4, rel=1e-6)
    # without the mask the large masked logit does change the loss
    assert value(loss_fn(logits(rows), target)) != pytest.approx(values[0], rel=1e-3)


def test_mask_equals_dropping_the_class_for_cross_entropy():
    z = logits([[2.0, 1.0, 0.0, 4.0], [0.3, -1.0, 2.0, 9.0]])
    mask = torch.tensor([[True, True, True, False]] * 2)
    masked = build_loss("ce")(z, targets([0, 2]), mask)
    dropped = build_loss("ce")(z[:, :3], targets([0, 2]))
    assert value(masked) == pytest.approx(value(dropped), rel=1e-6)


def test_masked_target_is_an_error():
    mask = torch.tensor([[True, False, True]])
    with pytest.raises(ValueError, match="masked out at rows \\[0\\]"):
        build_loss("ce")(logits([LOGITS[0]]), targets([1]), mask)


@pytest.mark.parametrize("name,params", CLASSIFICATION_LOSSES)
def test_ignore_index_rows_do_not_count(name, params):
    loss_fn = build_loss(name, **params)
    z = logits([[2.0, 1.0, 0.0], [9.0, -9.0, 0.0], [0.0, 0.0, 0.0]], grad=True)
    full = loss_fn(z, targets([0, -1, 2]))
    kept = loss_fn(logits([[2.0, 1.0, 0.0], [0.0, 0.0, 0.0]]), targets([0, 2]))
    assert value(full) == pytest.approx(value(kept), rel=1e-6)
    full.backward()
    assert z.grad[1].abs().max() == 0.0
    # all rows ignored: zero loss that still backpropagates
    nothing = logits([[1.0, 2.0, 3.0]], grad=True)
    empty = loss_fn(nothing, targets([-1]))
    empty.backward()
    assert value(empty) == 0.0 and torch.equal(nothing.grad, torch.zeros(1, 3))


def test_reduction_none_keeps_rows():
    per_row = build_loss("weighted_ce", class_counts=COUNTS, reduction="none")(logits(), targets([0, -1]))
    assert per_row.tolist() == pytest.approx([2 / 3 * CE1, 0.0], rel=1e-6)


@pytest.mark.parametrize("name,params", CLASSIFICATION_LOSSES + [("focal", {"gamma": 0.5})])
def test_gradients_finite_at_extreme_logits(name, params):
    loss_fn = build_loss(name, **params)
    z = logits([[1000.0, 0.0, -1000.0], [-500.0, 500.0, 0.0], [0.0, 0.0, 0.0]], grad=True)
    loss = loss_fn(z, targets([0, 1, 2]))  # the first two rows are confidently right
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()
    wrong = logits([[1000.0, 0.0, -1000.0]], grad=True)
    bad = loss_fn(wrong, targets([2]))
    bad.backward()
    assert torch.isfinite(bad) and value(bad) > 100 and torch.isfinite(wrong.grad).all()


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="outside 0..2"):
        build_loss("ce")(logits(), targets([0, 3]))
    with pytest.raises(ValueError, match="built for 3 classes"):
        build_loss("weighted_ce", class_counts=COUNTS)(torch.zeros(2, 4), targets([0, 1]))
    with pytest.raises(ValueError, match="integer class indices"):
        build_loss("ce")(logits(), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="class mask"):
        build_loss("ce")(logits(), targets(), torch.ones(2, 2, dtype=torch.bool))


# ------------------------------------------------------------------------- factory


def test_registry_and_factory():
    assert set(LOSSES.names()) >= {"ce", "weighted_ce", "focal", "weighted_focal", "vs", "logit_adjusted", "ccc"}
    # class_counts go to the losses that need them and are ignored by the others
    assert value(build_loss("ce", class_counts=COUNTS)(logits(), targets())) == pytest.approx((CE1 + CE2) / 2, rel=1e-6)
    with pytest.raises(ValueError, match="needs class_counts"):
        build_loss("vs")
    with pytest.raises(TypeError, match="gama"):
        build_loss("focal", gama=2.0)
    with pytest.raises(KeyError, match="unknown loss"):
        build_loss("hinge")
    assert type(build_loss("WCE", class_counts=COUNTS)).__name__ == "WeightedCrossEntropyLoss"


# ------------------------------------------------------------------------------ CCC


def test_ccc_loss_by_hand():
    ccc = build_loss("ccc")
    y = torch.tensor([1.0, 2.0, 3.0])
    assert value(ccc(y, y)) == pytest.approx(0.0, abs=1e-6)
    # shift by 1: CCC 4/7 (var 2/3 each, squared mean gap 1) -> loss 3/7
    assert value(ccc(y + 1, y)) == pytest.approx(3 / 7, rel=1e-5)
    # negated: CCC -1/13 -> loss 14/13
    assert value(ccc(-y, y)) == pytest.approx(14 / 13, rel=1e-5)
    # two dimensions average: perfect arousal (0) and shifted valence (3/7)
    pred = torch.stack([y, y + 1], dim=1)
    target = torch.stack([y, y], dim=1)
    assert value(ccc(pred, target)) == pytest.approx(3 / 14, rel=1e-5)


def test_ccc_loss_ignores_nan_targets():
    ccc = build_loss("ccc")
    pred = torch.tensor([[1.0, 0.0], [2.0, 5.0], [100.0, 1.0], [3.0, 2.0]], requires_grad=True)
    target = torch.tensor([[1.0, float("nan")], [2.0, float("nan")], [float("nan"), 4.0], [3.0, float("nan")]])
    # dimension 0 is perfect on its 3 targets; dimension 1 has one target and is left out
    loss = ccc(pred, target)
    assert value(loss) == pytest.approx(0.0, abs=1e-6)
    loss.backward()
    assert torch.isfinite(pred.grad).all()
    assert pred.grad[2, 0] == 0.0 and pred.grad[:, 1].abs().max() == 0.0
    none_left = build_loss("ccc")(torch.zeros(3, requires_grad=True), torch.full((3,), float("nan")))
    assert value(none_left) == 0.0


def test_ccc_loss_gradient_improves_predictions():
    torch.manual_seed(0)
    target = torch.randn(64, 3)
    pred = (0.2 * target + 1.0).clone().requires_grad_(True)
    ccc = build_loss("ccc")
    start = value(ccc(pred, target))
    for _ in range(50):  # plain gradient descent (torch.optim's first use is slow to import)
        pred.grad = None
        ccc(pred, target).backward()
        with torch.no_grad():
            pred -= 5.0 * pred.grad
    assert value(ccc(pred, target)) < 0.2 * start
