"""Audio augmentation of training clips: deterministic per clip and copy, each effect as set."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from polyemo.augment import AugmentSpec, augment_wave, clip_rng, impulse_response

RATE = 16_000


def _tone(seconds=1.0, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def test_same_clip_and_copy_give_the_same_augmentation_other_copies_differ():
    spec = AugmentSpec(copies=2, p=1.0, reverb_rt60=(0.2, 0.4))
    wave = _tone()
    a = augment_wave(wave, spec, clip_rng(spec, 0, wave))
    np.testing.assert_array_equal(a, augment_wave(wave.copy(), spec, clip_rng(spec, 0, wave.copy())))
    b = augment_wave(wave, spec, clip_rng(spec, 1, wave))
    assert a.shape != b.shape or not np.allclose(a, b)
    other = AugmentSpec(copies=2, p=1.0, reverb_rt60=(0.2, 0.4), seed=1)
    assert not np.array_equal(a, augment_wave(wave, other, clip_rng(other, 0, wave)))


def test_speed_resamples_gain_scales_noise_hits_its_snr():
    wave = _tone(2.0)
    fast = augment_wave(wave, AugmentSpec(speed=(1.25, 1.25), gain_db=None, noise_snr_db=None, p=1.0),
                        np.random.default_rng(0))
    assert abs(len(fast) - len(wave) / 1.25) <= 2
    loud = augment_wave(wave, AugmentSpec(speed=None, gain_db=6.0, noise_snr_db=None, p=1.0), np.random.default_rng(0))
    ratio_db = 20 * np.log10(np.abs(loud).max() / np.abs(wave).max())
    assert -6.0 - 1e-3 <= ratio_db <= 6.0 + 1e-3 and abs(ratio_db) > 1e-3
    noisy = augment_wave(wave, AugmentSpec(speed=None, gain_db=None, noise_snr_db=(20.0, 20.0), p=1.0),
                         np.random.default_rng(0))
    snr = 10 * np.log10(np.mean(wave.astype(np.float64) ** 2) / np.mean((noisy - wave).astype(np.float64) ** 2))
    assert abs(snr - 20.0) < 0.3


def test_p_zero_leaves_the_clip_as_it_was():
    wave = _tone()
    np.testing.assert_array_equal(augment_wave(wave, AugmentSpec(p=0.0), np.random.default_rng(0)), wave)


def test_impulse_response_decays_sixty_db_over_rt60():
    h = impulse_response(0.5, np.random.default_rng(0))
    assert len(h) == 8000 and abs(np.sum(h.astype(np.float64) ** 2) - 1) < 1e-5 and h[0] == h.max()
    tail = h[1:].astype(np.float64) ** 2
    early = tail[:800].mean()  # first 50 ms
    late = tail[-800:].mean()  # last 50 ms: about 60 dB * 0.9 below
    drop = 10 * np.log10(early / late)
    assert 45 < drop < 65
    reverbed = augment_wave(_tone(), AugmentSpec(speed=None, gain_db=None, noise_snr_db=None,
                                                 reverb_rt60=(0.5, 0.5), p=1.0), np.random.default_rng(0))
    assert reverbed.shape == _tone().shape and not np.allclose(reverbed, _tone())


@pytest.mark.parametrize("bad", [{"speed": (1.1, 0.9)}, {"speed": (0.2, 1.0)}, {"reverb_rt60": (0.0, 1.0)},
                                 {"speed": None, "gain_db": None, "noise_snr_db": None}, {"copies": 0},
                                 {"colour": "pink"}])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValidationError):
        AugmentSpec(**bad)
