"""openSMILE encoders on real speech."""

from __future__ import annotations

import numpy as np
import pytest

from polyemo.encoders import ENCODERS, get_encoder


def test_egemaps_functionals_on_real_clips(speech):
    encoder = get_encoder("egemaps")
    assert (encoder.num_layers, encoder.pooled_dim, encoder.has_frames) == (1, 88, False)
    pooled = encoder.pooled(speech[:4])
    assert pooled.shape == (4, 1, 88) and pooled.dtype == np.float32 and np.isfinite(pooled).all()
    assert len(set(map(tuple, pooled[:, 0].round(3)))) == 4  # different clips, different features
    assert "F0semitoneFrom27.5Hz_sma3nz_amean" in encoder.feature_names
    with pytest.raises(NotImplementedError, match="functionals"):
        encoder.frames(speech[:1])


def test_egemaps_lld_frames_and_pooling(speech):
    encoder = get_encoder("egemaps-lld")
    wave = speech[0]
    frames = encoder.frames([wave])[0]
    assert frames.layers.shape[0] == 1 and frames.layers.shape[2] == 25
    assert abs(frames.layers.shape[1] - wave.size / 160) < 10  # 100 frames per second
    pooled = encoder.pooled([wave])
    assert pooled.shape == (1, 1, 50) and np.isfinite(pooled).all()
    np.testing.assert_allclose(pooled[0, 0, :25], frames.layers[0].mean(axis=0), rtol=1e-5, atol=1e-6)


def test_compare_functionals(speech):
    pooled = get_encoder("compare").pooled(speech[:1])
    assert pooled.shape == (1, 1, 6373) and np.isfinite(pooled).all()


def test_identity_and_bad_input():
    identity = get_encoder("egemaps").identity
    assert identity.name == "egemaps" and identity.options["feature_set"] == "eGeMAPSv02"
    assert identity.key() != get_encoder("egemaps-lld").identity.key()
    assert {"egemaps", "compare", "egemaps-lld"} <= set(ENCODERS.names())
    with pytest.raises(ValueError, match="wave 0"):
        get_encoder("egemaps").pooled([np.zeros(10, np.float32)])


def test_threads_give_the_same_features_in_order(speech, monkeypatch):
    waves = speech[:6]
    one = get_encoder("egemaps", threads=1)
    three = get_encoder("egemaps", threads=3)
    assert (one.threads, three.threads) == (1, 3)
    np.testing.assert_array_equal(one.pooled(waves), three.pooled(waves))  # same values, same row order
    lld = get_encoder("egemaps-lld", threads=2).frames(waves[:3])
    for wave, frames in zip(waves[:3], lld):
        np.testing.assert_array_equal(frames.layers, get_encoder("egemaps-lld", threads=1).frames([wave])[0].layers)
    with pytest.raises(ValueError, match="wave 1"):  # the failing wave is still named
        three.pooled([waves[0], np.zeros(10, np.float32)])
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # extraction workers set their share
    assert get_encoder("egemaps").threads == 2
    with pytest.raises(ValueError, match="threads"):
        get_encoder("egemaps", threads=0)
