"""A bundle made before issue 12 gets its adaptation state in place (the four-language default
model was upgraded this way by benchmarks/default_model_state.py; the six-corpus one was
exported with it)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from polyemo.bundle import AdaptationSpec, add_adaptation_state, read_bundle, verify_bundle
from polyemo.predict.adapt import adaptation_state_of
from polyemo.predict.engine import default_model_path, load_model


def test_the_packaged_model_carries_its_adaptation_state():
    bundle = read_bundle(default_model_path())
    final = bundle.metrics["final_model"]
    # the moments of the model's own training rows, every one of them
    assert bundle.config.adaptation is not None
    assert bundle.config.adaptation.n_rows == final["n_train"] + final["n_validation"]
    prior = bundle.adaptation_stats["source_prior"]
    assert prior.shape == (7,) and abs(prior.sum() - 1) < 1e-5 and prior.min() > 0.05
    assert bundle.adaptation_stats["feature_mean"].shape == (len(bundle.config.features.layers), 1024)
    assert "## Test-time adaptation" in bundle.card_markdown


def test_adding_a_state_keeps_weights_and_is_verified(tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(default_model_path(), copy)
    before = read_bundle(copy)
    rng = np.random.default_rng(0)
    recogniser = load_model(copy)
    n_layers = len(before.config.features.layers)
    rows = [rng.standard_normal((n_layers, 1024)).astype(np.float32) for _ in range(40)]
    state = adaptation_state_of(recogniser, rows)
    np.testing.assert_allclose(state["source_prior"], recogniser._forward(recogniser._normaliser(
        rows, [f"r{i}" for i in range(40)])[0])[0].mean(0), rtol=1e-5)
    after = add_adaptation_state(copy, AdaptationSpec(n_rows=40), state, section="added in a test")
    verify_bundle(copy)
    assert after.config.adaptation.n_rows == 40 and "added in a test" in after.card_markdown
    for name, tensor in before.head_state.items():
        assert np.array_equal(tensor.numpy(), after.head_state[name].numpy())
    np.testing.assert_allclose(after.adaptation_stats["feature_std"], state["feature_std"], rtol=1e-6)
    with pytest.raises(ValueError, match="source_prior"):
        add_adaptation_state(copy, AdaptationSpec(), {**state, "source_prior": np.ones(3) / 3})
    with pytest.raises(ValueError, match="feature_mean"):
        add_adaptation_state(copy, AdaptationSpec(), {**state, "feature_mean": np.zeros((n_layers + 1, 1024))})
    assert read_bundle(copy).config.adaptation.n_rows == 40  # a refused update leaves the bundle as it was
