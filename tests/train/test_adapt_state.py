"""What a bundle keeps from training for test-time adaptation (issue 12): the model's source
prior and the moments of the features as its head saw them; and the smallest usable batch."""

from __future__ import annotations

import numpy as np
import pytest

from polyemo.heads.model import HeadConfig
from polyemo.train import SplitData, build_estimator
from polyemo.train.adaptation import ADAPTERS, adaptation_state, min_batch, model_prior


def _blobs(counts, seed, shift=3.0):
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    x = rng.normal(size=(len(y), 2, 4)).astype(np.float32) + shift
    x[:, 1, :3] += 2.0 * np.eye(3, dtype=np.float32)[y]
    return SplitData(x, y, speakers=np.array([f"s{i % 4}" for i in range(len(y))], dtype=object))


@pytest.mark.parametrize("head", ["linear", "logreg"])
def test_state_is_the_models_prior_and_the_normalised_moments(head, quick_config):
    train, val = _blobs([150, 60, 30], 0), _blobs([20, 20, 20], 1)
    params = {"C": 1.0} if head == "logreg" else {}
    estimator = build_estimator(HeadConfig(name=head, params=params), quick_config(epochs=10, normalisation="global"),
                                3, ["a", "b", "c"])
    estimator.fit(train, val)
    state = adaptation_state(estimator, train)
    np.testing.assert_allclose(state["source_prior"], model_prior(estimator, train))
    assert state["source_prior"][0] > state["source_prior"][2]  # it learnt the imbalanced prior
    # moments of what the head sees: global statistics of the training rows -> about 0 and 1, not the raw 3
    assert state["feature_mean"].shape == (2, 4) and np.abs(state["feature_mean"]).max() < 0.2
    np.testing.assert_allclose(state["feature_std"], 1.0, atol=0.2)
    # labels play no part
    scrambled = SplitData(train.features, np.random.default_rng(1).permutation(train.labels), speakers=train.speakers)
    np.testing.assert_allclose(adaptation_state(estimator, scrambled)["source_prior"], state["source_prior"])


def test_min_batch_is_the_number_of_classes():
    assert min_batch("prior", 7) == 7 and min_batch("tent", 4) == 4 and min_batch("uniform-prior", 1) == 2
    assert ADAPTERS.get("prior").name == "prior-em"
    with pytest.raises(KeyError):
        min_batch("magic", 4)
