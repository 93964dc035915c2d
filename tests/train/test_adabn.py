"""``adabn``: the unlabelled batch's own statistics replace the training ones.

Checked on a shift and rescaling of every feature (a new recording setup): adabn maps the
batch's moments onto the training moments exactly, repairs the accuracy without reading a
label, and ``steps`` continue with the TENT objective from there."""

from __future__ import annotations

import numpy as np
import pytest

from polyemo.heads.model import HeadConfig
from polyemo.train import SplitData, build_estimator
from polyemo.train.adaptation import ADAPTERS, adapt_batch, make_adapter


def _blobs(n_per_class, seed, shift=0.0, scale=1.0, dim=4, classes=3, sep=2.0):
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.full(n, c) for c, n in enumerate(n_per_class)])
    x = rng.normal(size=(len(y), 1, dim)).astype(np.float32)
    x[:, 0, :classes] += sep * np.eye(classes, dtype=np.float32)[y]
    x = (x * scale + shift).astype(np.float32)
    return SplitData(x, y, speakers=np.array([f"s{i % 5}" for i in range(len(y))], dtype=object),
                     utt_ids=np.array([f"c/{seed}_{i}" for i in range(len(y))], dtype=object))


def _accuracy(p, y):
    return float((p.argmax(1) == y).mean())


@pytest.fixture(params=["linear", "logreg"])
def fitted(request, quick_config):
    train, val = _blobs([120, 120, 120], 0), _blobs([30, 30, 30], 1)
    params = {"C": 1.0} if request.param == "logreg" else {}
    estimator = build_estimator(HeadConfig(name=request.param, params=params),
                                quick_config(epochs=15, normalisation="global"), 3, ["a", "b", "c"])
    estimator.fit(train, val)
    return estimator, train


def test_adabn_maps_the_batch_moments_onto_the_training_moments(fitted):
    estimator, train = fitted
    batch = _blobs([100, 100, 100], 9, shift=np.array([2.0, -1.5, 1.0, 0], dtype=np.float32), scale=0.5)
    adapter = make_adapter("adabn").fit(estimator, train)
    adapter.adapt(estimator, batch, estimator.predict(batch).probabilities)
    x = np.asarray(estimator._prepare(batch).features, dtype=np.float64)
    moved = (x - adapter.shift) * np.exp(-adapter.log_scale)
    np.testing.assert_allclose(moved.mean(0), adapter.train_mean, atol=1e-4)
    np.testing.assert_allclose(moved.std(0), adapter.train_std, rtol=1e-4)


def test_adabn_repairs_a_shifted_rescaled_batch_without_labels(fitted):
    estimator, train = fitted
    batch = _blobs([100, 100, 100], 9, shift=np.array([2.0, -1.5, 1.0, 0], dtype=np.float32), scale=0.5)
    plain = estimator.predict(batch).probabilities
    adapted = adapt_batch(estimator, train, batch, "adabn")
    assert _accuracy(adapted, batch.labels) > _accuracy(plain, batch.labels) + 0.1
    scrambled = SplitData(batch.features, np.random.default_rng(1).permutation(batch.labels), speakers=batch.speakers)
    np.testing.assert_allclose(adapt_batch(estimator, train, scrambled, "adabn"), adapted)
    np.testing.assert_allclose(adapt_batch(estimator, train, batch, "adabn", strength=0.0), plain, atol=1e-6)
    # the head is untouched
    np.testing.assert_allclose(estimator.predict(batch).probabilities, plain, atol=1e-6)


def test_adabn_steps_continue_with_the_tent_objective(fitted):
    estimator, train = fitted
    batch = _blobs([100, 100, 100], 9, shift=np.array([2.0, -1.5, 1.0, 0], dtype=np.float32), scale=0.5)
    start = make_adapter("adabn")
    stepped = make_adapter("adabn", steps=5, lr=0.05)
    a = adapt_batch(estimator, train, batch, start)
    b = adapt_batch(estimator, train, batch, stepped)
    assert not np.allclose(a, b)
    assert not np.allclose(start.shift, stepped.shift)
    assert stepped.params() == {"strength": 1.0, "steps": 5, "lr": 0.05, "diversity": 1.0}
    assert start.params() == {"strength": 1.0, "steps": 0}


def test_adabn_is_registered_and_checks_its_settings():
    assert "adabn" in ADAPTERS.names()
    with pytest.raises(ValueError, match="steps"):
        make_adapter("adabn", steps=-1)


def test_adabn_tent_is_adabn_with_steps(fitted):
    estimator, train = fitted
    batch = _blobs([100, 100, 100], 9, shift=np.array([2.0, -1.5, 1.0, 0], dtype=np.float32), scale=0.5)
    np.testing.assert_allclose(adapt_batch(estimator, train, batch, "adabn-tent", steps=5),
                               adapt_batch(estimator, train, batch, "adabn", steps=5))
    with pytest.raises(ValueError, match="steps"):
        make_adapter("adabn-tent", steps=0)


@pytest.mark.parametrize("name", ["tent", "adabn-tent"])
def test_tent_steps_move_in_units_of_the_training_spread(quick_config, name):
    # inputs that vary by ~0.05 per dimension (as per-utterance standardised pooled states do):
    # a step of lr 0.05 in absolute units would be a whole spread and wreck a balanced batch
    def small(blobs):
        return SplitData((blobs.features * 0.05).astype(np.float32), blobs.labels, speakers=blobs.speakers,
                         utt_ids=blobs.utt_ids)

    train, val, batch = small(_blobs([120] * 3, 0)), small(_blobs([30] * 3, 1)), small(_blobs([100] * 3, 9))
    estimator = build_estimator(HeadConfig(name="linear"), quick_config(epochs=15, normalisation="none"), 3,
                                ["a", "b", "c"])
    estimator.fit(train, val)
    plain = estimator.predict(batch).probabilities
    adapter = make_adapter(name, steps=10, lr=0.05)
    adapted = adapt_batch(estimator, train, batch, adapter)
    assert adapter.train_std is not None and float(np.median(adapter.train_std)) < 0.2
    assert _accuracy(adapted, batch.labels) >= _accuracy(plain, batch.labels) - 0.05
    assert np.bincount(adapted.argmax(1), minlength=3).min() > 50  # no collapse onto one class
