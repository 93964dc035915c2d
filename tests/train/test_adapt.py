"""Test-time adapters: label-shift EM, uniform-prior adjustment, TENT on the normalisation.

Each is checked on a shift it should repair (and that it reads no labels of the batch)."""

from __future__ import annotations

import numpy as np
import pytest

from polyemo.train import SplitData, build_estimator
from polyemo.train.adaptation import ADAPTERS, adapt_batch, make_adapter, model_prior
from polyemo.train.adaptation.prior_em import em_priors
from polyemo.train.adaptation.uniform_prior import uniform_offsets
from polyemo.heads.model import HeadConfig


def _blobs(n_per_class, seed, shift=0.0, dim=4, classes=3, sep=2.0):
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.full(n, c) for c, n in enumerate(n_per_class)])
    x = rng.normal(size=(len(y), 1, dim)).astype(np.float32)
    x[:, 0, :classes] += sep * np.eye(classes, dtype=np.float32)[y]
    x += shift
    return SplitData(x, y, speakers=np.array([f"s{i % 5}" for i in range(len(y))], dtype=object),
                     utt_ids=np.array([f"c/{seed}_{i}" for i in range(len(y))], dtype=object))


def _accuracy(p, y):
    return float((p.argmax(1) == y).mean())


@pytest.fixture
def fitted(quick_config):
    train, val = _blobs([120, 120, 120], 0), _blobs([30, 30, 30], 1)
    estimator = build_estimator(HeadConfig(name="linear"), quick_config(epochs=15, normalisation="global"), 3,
                                ["a", "b", "c"])
    estimator.fit(train, val)
    return estimator, train


def test_registry_names_every_adapter():
    assert {"prior-em", "uniform-prior", "tent"} <= set(ADAPTERS.names())
    with pytest.raises(ValueError, match="strength"):
        make_adapter("prior-em", strength=1.5)


def test_em_recovers_a_known_label_shift():
    # Bayes posteriors of a 1-D two-class problem under a uniform source prior, target 80/20.
    rng = np.random.default_rng(0)
    y = (rng.random(4000) < 0.2).astype(int)
    x = rng.normal(size=4000) + 2.0 * y
    like = np.stack([np.exp(-0.5 * x ** 2), np.exp(-0.5 * (x - 2.0) ** 2)], 1)
    posterior = like / like.sum(1, keepdims=True)
    prior = em_priors(posterior, np.array([0.5, 0.5]))
    assert abs(prior[1] - y.mean()) < 0.03
    assert abs(posterior.mean(0)[1] - y.mean()) > 0.08  # the plain mean prediction is off


def test_prior_em_raises_accuracy_under_label_shift_and_ignores_labels(fitted):
    estimator, train = fitted
    batch = _blobs([300, 40, 20], 5, sep=1.2)  # a shifted class prior, harder classes
    plain = estimator.predict(batch).probabilities
    adapted = adapt_batch(estimator, train, batch, "prior-em", floor=0.0)
    assert _accuracy(adapted, batch.labels) > _accuracy(plain, batch.labels) + 0.03
    scrambled = SplitData(batch.features, np.random.default_rng(1).permutation(batch.labels), speakers=batch.speakers)
    np.testing.assert_allclose(adapt_batch(estimator, train, scrambled, "prior-em", floor=0.0), adapted)
    np.testing.assert_allclose(adapt_batch(estimator, train, batch, "prior-em", strength=0.0), plain)


def test_model_prior_is_the_mean_training_prediction(fitted):
    estimator, train = fitted
    prior = model_prior(estimator, train)
    assert prior.shape == (3,) and abs(prior.sum() - 1) < 1e-9
    np.testing.assert_allclose(prior, estimator.predict(train).probabilities.mean(0), atol=1e-9)


def test_uniform_prior_makes_the_batch_mean_uniform():
    rng = np.random.default_rng(0)
    p = rng.dirichlet([4, 1, 1], size=500)  # a batch heard mostly as class 0
    b = uniform_offsets(p)
    q = p * np.exp(b)
    q /= q.sum(1, keepdims=True)
    np.testing.assert_allclose(q.mean(0), np.full(3, 1 / 3), atol=1e-4)
    adapter = make_adapter("uniform-prior", strength=0.5)
    half = adapter.adapt(None, None, p)
    assert 1 / 3 < half.mean(0)[0] < p.mean(0)[0]


def test_uniform_prior_repairs_a_batch_biased_by_domain_shift(fitted):
    estimator, train = fitted
    # balanced target, but a feature offset pushes every clip towards class 0
    batch = _blobs([100, 100, 100], 7, shift=np.array([1.5, 0, 0, 0], dtype=np.float32))
    plain = estimator.predict(batch).probabilities
    adapted = adapt_batch(estimator, train, batch, "uniform-prior")
    assert plain.argmax(1).tolist().count(0) > 140
    assert _accuracy(adapted, batch.labels) > _accuracy(plain, batch.labels) + 0.05


@pytest.mark.parametrize("head", ["linear", "logreg"])
def test_tent_undoes_a_feature_shift_without_labels(quick_config, head):
    train, val = _blobs([120, 120, 120], 0), _blobs([30, 30, 30], 1)
    params = {"C": 1.0} if head == "logreg" else {}
    estimator = build_estimator(HeadConfig(name=head, params=params),
                                quick_config(epochs=15, normalisation="global"), 3, ["a", "b", "c"])
    estimator.fit(train, val)
    batch = _blobs([100, 100, 100], 9, shift=np.array([1.5, -1.0, 0, 0], dtype=np.float32))
    plain = estimator.predict(batch).probabilities
    adapter = make_adapter("tent", steps=30, lr=0.05)
    adapted = adapt_batch(estimator, train, batch, adapter)
    assert _accuracy(adapted, batch.labels) > _accuracy(plain, batch.labels) + 0.05
    assert adapter.shift.shape == (1, 4)
    # the head is untouched: the plain prediction is the same after adapting
    np.testing.assert_allclose(estimator.predict(batch).probabilities, plain, atol=1e-6)
    np.testing.assert_allclose(adapt_batch(estimator, train, batch, "tent", strength=0.0), plain)
