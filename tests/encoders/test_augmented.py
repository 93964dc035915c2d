"""The augmented-audio encoder: base features of the augmented clip, an identity of its own."""

from __future__ import annotations

import numpy as np
import pytest

from polyemo.augment import AugmentSpec, augment_wave, clip_rng
from polyemo.encoders import get_encoder
from polyemo.encoders.augmented import AugmentedEncoder


def test_features_are_the_base_features_of_the_augmented_clip_and_keys_differ():
    base = get_encoder("egemaps")
    spec = AugmentSpec(copies=2, p=1.0)
    rng = np.random.default_rng(0)
    waves = [(0.1 * rng.standard_normal(16_000)).astype(np.float32) for _ in range(2)]
    encoder = AugmentedEncoder(base, spec, 1)
    expected = base.pooled([augment_wave(w, spec, clip_rng(spec, 1, w)) for w in waves])
    np.testing.assert_allclose(encoder.pooled(waves), expected)
    keys = {base.identity.key(), encoder.identity.key(), AugmentedEncoder(base, spec, 0).identity.key(),
            AugmentedEncoder(base, AugmentSpec(copies=2, p=1.0, seed=5), 1).identity.key()}
    assert len(keys) == 4
    assert encoder.identity.name == "egemaps+augment" and encoder.identity.options["augment"]["copy"] == 1
    assert (encoder.num_layers, encoder.pooled_dim) == (base.num_layers, base.pooled_dim)
    with pytest.raises(ValueError, match="copy 2"):
        AugmentedEncoder(base, spec, 2)
