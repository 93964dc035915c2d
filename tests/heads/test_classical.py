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


# --- class masks ------------------------------------------------------------------------------

def _standardised(n, f, k, seed, spread=0.4):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    x = rng.normal(0, spread, (k, f))[y] + rng.normal(size=(n, f))
    return (x - x.mean(0)) / x.std(0), y


@pytest.mark.parametrize("classes, class_weight", [(4, None), (3, "balanced"), (2, None), (2, "balanced")])
def test_logreg_without_masks_equals_scikit_learn(classes, class_weight):
    """All-true masks (or none): the torch L-BFGS fit is scikit-learn's multinomial (or, for two
    classes, binomial) logistic regression: same objective, same probabilities."""
    from sklearn.linear_model import LogisticRegression

    from polyemo.heads.classical import MaskedLogisticRegression

    x, y = _standardised(240, 12, classes, seed=classes)
    for C in (0.01, 1.0, 100.0):
        ours = MaskedLogisticRegression(C=C, class_weight=class_weight, tol=1e-9, max_iter=5000)
        ours.fit(x, y, masks=np.ones((len(y), classes), bool))
        reference = LogisticRegression(C=C, class_weight=class_weight, tol=1e-10, max_iter=10000).fit(x, y)
        np.testing.assert_allclose(ours.predict_proba(x), reference.predict_proba(x), atol=1e-5)
        assert ours.coef_.shape == reference.coef_.shape
    # the head (scaler + regression) against scikit-learn's pipeline
    head = HEADS.get("logreg")(12, classes, C=0.5, class_weight=class_weight, tol=1e-9).fit(x * 10 + 3, y)
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    reference = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, class_weight=class_weight, tol=1e-10,
                                                                   max_iter=10000)).fit(x * 10 + 3, y)
    np.testing.assert_allclose(head.predict_proba(x * 10 + 3), reference.predict_proba(x * 10 + 3), atol=1e-5)


def test_logreg_is_deterministic():
    x, y = _standardised(300, 20, 5, seed=3)
    masks = np.ones((300, 5), bool)
    masks[:100, 4] = False
    y = np.where(masks[np.arange(300), y], y, 0)
    a = HEADS.get("logreg")(20, 5, C=[0.1, 1.0]).fit(x, y, x, y, lambda t, p: float((t == p).mean()), masks=masks)
    b = HEADS.get("logreg")(20, 5, C=[0.1, 1.0]).fit(x, y, x, y, lambda t, p: float((t == p).mean()), masks=masks)
    np.testing.assert_array_equal(a.predict_proba(x), b.predict_proba(x))


def _urdu_like(seed=0):
    """Corpus A has classes 0..3 (3 = "surprise"); corpus B, five times larger, only 0..2.
    Surprise shares a direction with class 0, so rows of B that are near it say "not surprise"
    unless their masks keep them out of the surprise softmax."""
    rng = np.random.default_rng(seed)
    centres = np.array([[2.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 2.0, 0], [1.2, 0, 0, 1.2]])

    def draw(n, classes):
        y = np.asarray(classes)[np.arange(n) % len(classes)]
        return centres[y] + rng.normal(0, 1.0, (n, 4)), y

    xa, ya = draw(80, [0, 1, 2, 3])
    xb, yb = draw(400, [0, 1, 2])
    xt, _ = draw(200, [3])  # held-out surprise rows
    masks_b = np.tile([True, True, True, False], (len(yb), 1))
    return (xa, ya), (xb, yb, masks_b), xt


def test_masked_logreg_rows_without_surprise_do_not_push_it_down():
    (xa, ya), (xb, yb, masks_b), xt = _urdu_like()
    x, y = np.vstack([xa, xb]), np.concatenate([ya, yb])
    masks = np.vstack([np.ones((len(ya), 4), bool), masks_b])
    surprise = {}
    for name, fit in {
        "A only": lambda h: h.fit(xa, ya),
        "A+B unmasked": lambda h: h.fit(x, y),
        "A+B masked": lambda h: h.fit(x, y, masks=masks),
    }.items():
        surprise[name] = float(fit(HEADS.get("logreg")(4, 4, C=1.0)).predict_proba(xt)[:, 3].mean())
    # Unmasked, the many B rows teach "surprise is rare": its probability on surprise rows falls.
    assert surprise["A+B unmasked"] < surprise["A only"] - 0.1, surprise
    # Masked, B rows say nothing about surprise: it stays where corpus A alone puts it (or higher).
    assert surprise["A+B masked"] > surprise["A+B unmasked"] + 0.1, surprise
    assert abs(surprise["A+B masked"] - surprise["A only"]) < 0.5 * (surprise["A only"] - surprise["A+B unmasked"]), surprise


def test_masked_logreg_gives_masked_classes_no_gradient():
    """The rows of a corpus without class 3 contribute exactly zero gradient to class 3's
    parameters (recomputed independently at the fitted point), and non-zero to the others."""
    import torch

    from polyemo.heads.classical import MaskedLogisticRegression

    (xa, ya), (xb, yb, masks_b), _ = _urdu_like(1)
    x, y = np.vstack([xa, xb]), np.concatenate([ya, yb])
    masks = np.vstack([np.ones((len(ya), 4), bool), masks_b])
    model = MaskedLogisticRegression(C=1.0, tol=1e-10, max_iter=5000).fit(x, y, masks=masks)
    # At the fitted point the gradient of B rows' loss w.r.t. class 3's parameters is exactly 0.
    coef = torch.tensor(model.coef_, requires_grad=True)
    bias = torch.tensor(model.intercept_, requires_grad=True)
    logits = torch.from_numpy(xb) @ coef.T + bias
    logits = logits.masked_fill(torch.from_numpy(~masks_b), float("-inf"))
    torch.nn.functional.cross_entropy(logits, torch.from_numpy(yb), reduction="sum").backward()
    assert float(coef.grad[3].abs().max()) == 0.0 and float(bias.grad[3].abs()) == 0.0
    assert float(coef.grad[:3].abs().max()) > 0  # the other classes do learn from B


def _masked_batch(num_classes=3, n=6, seed=0):
    import torch

    generator = torch.Generator().manual_seed(seed)
    masks = torch.ones((n, num_classes), dtype=torch.bool)
    masks[: n // 2, num_classes - 1] = False  # half the rows come from a corpus without the last class
    labels = torch.arange(n) % (num_classes - 1)
    return generator, masks, labels


@pytest.mark.parametrize("name", sorted(HEADS.names()))
def test_every_head_honours_class_masks_or_refuses_them(name):
    """Every registered head: torch heads route the masks into the loss (masked logits get no
    gradient); classical heads either honour them (logreg) or refuse incomplete masks."""
    import torch

    from polyemo.heads.base import Targets
    from polyemo.heads.classical import ClassicalHead, ClassMaskError
    from polyemo.heads.model import head_input_kind, is_classical
    from polyemo.losses import build_loss

    if is_classical(name):
        (xa, ya), (xb, yb, masks_b), _ = _urdu_like(2)
        x, y = np.vstack([xa, xb]), np.concatenate([ya, yb])
        masks = np.vstack([np.ones((len(ya), 4), bool), masks_b])
        head = HEADS.get(name)(4, 4)
        assert isinstance(head, ClassicalHead)
        if head.supports_masks:
            masked = head.fit(x, y, masks=masks).predict_proba(xa[ya == 3])[:, 3].mean()
            unmasked = HEADS.get(name)(4, 4).fit(x, y).predict_proba(xa[ya == 3])[:, 3].mean()
            assert masked > unmasked
        else:
            with pytest.raises(ClassMaskError, match="cannot honour class masks"):
                head.fit(x, y, masks=masks)
            HEADS.get(name)(4, 4).fit(x, y, masks=np.ones_like(masks))  # complete masks: allowed
        return
    generator, masks, labels = _masked_batch()
    if head_input_kind(name) == "audio":  # a fine-tuned encoder's head: the estimator feeds it pooled (B, D) states
        head = HEADS.get(name)(8, 3)
        outputs = head(torch.randn((6, 8), generator=generator))
        outputs["emotion"].retain_grad()
        loss, _ = head.compute_loss(outputs, Targets(emotion=labels, masks=masks), build_loss("ce"))
        loss.backward()
        grad = outputs["emotion"].grad
        assert float(grad[~masks].abs().max()) == 0.0 and float(grad[masks].abs().max()) > 0.0
        return
    params = {"multitask": {"gender_weight": 1.0},  # it refuses to run without a task
              "cross_attention": {"speech_dim": 4, "text_tokens": 2},  # frames = speech then 2 text slots
              "dimensional": {"class_weight": 1.0}}.get(name, {})
    model = build_head(HeadConfig(name=name, params=params), 2, 8, 3)
    if head_input_kind(name) == "frames":
        x, lengths = torch.randn((6, 2, 5, 8), generator=generator), torch.full((6,), 5)
    else:
        x, lengths = torch.randn((6, 2, 8), generator=generator), None
    outputs = model(x, lengths)
    outputs["emotion"].retain_grad()
    loss, _ = model.compute_loss(outputs, Targets(emotion=labels, masks=masks, gender=torch.arange(6) % 2), build_loss("ce"))
    loss.backward()
    grad = outputs["emotion"].grad
    assert float(grad[~masks].abs().max()) == 0.0
    assert float(grad[masks].abs().max()) > 0.0
