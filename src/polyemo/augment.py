"""Audio augmentation of training clips: speed, gain, additive noise, synthetic reverberation.

Used by frozen-feature experiments (``encoder.augment``): each copy ``k`` of a clip is
augmented once, deterministically from ``(seed, k, the clip's samples)``, and its features are
cached under an encoder identity that names the augmentation (:mod:`polyemo.encoders.augmented`),
so training on augmented copies costs one extraction per copy, not one per epoch. Only
training rows get copies; validation and test rows are never augmented.

The impulse response is synthetic (no files to fetch): a direct path then exponentially
decaying Gaussian noise whose energy falls by 60 dB over ``rt60`` seconds (the usual
statistical model of a diffuse late reverberation tail).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

SAMPLE_RATE = 16_000


class AugmentSpec(BaseModel):
    """How training copies are made; each effect applies with probability ``p`` per copy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: augmented copies per training clip (each its own cached features)
    copies: int = Field(1, ge=1, le=16)
    #: playback speed factor range (resampling: tempo and pitch together), e.g. [0.9, 1.1]
    speed: tuple[float, float] | None = (0.9, 1.1)
    #: gain uniform in [-gain_db, +gain_db]
    gain_db: float | None = Field(6.0, gt=0)
    #: white noise at an SNR (dB) uniform in this range
    noise_snr_db: tuple[float, float] | None = (10.0, 30.0)
    #: synthetic reverberation with an RT60 (seconds) uniform in this range (None: off)
    reverb_rt60: tuple[float, float] | None = None
    p: float = Field(0.5, ge=0, le=1)
    seed: int = 0

    @model_validator(mode="after")
    def _ranges(self) -> AugmentSpec:
        for name in ("speed", "noise_snr_db", "reverb_rt60"):
            pair = getattr(self, name)
            if pair is not None and pair[0] > pair[1]:
                raise ValueError(f"augment.{name}: low {pair[0]} above high {pair[1]}")
        if self.speed is not None and not (0.5 <= self.speed[0] and self.speed[1] <= 2.0):
            raise ValueError(f"augment.speed: factors must lie in [0.5, 2.0], got {list(self.speed)}")
        if self.reverb_rt60 is not None and not (0.0 < self.reverb_rt60[0] and self.reverb_rt60[1] <= 3.0):
            raise ValueError(f"augment.reverb_rt60: seconds must lie in (0, 3], got {list(self.reverb_rt60)}")
        if not any(getattr(self, n) is not None for n in ("speed", "gain_db", "noise_snr_db", "reverb_rt60")):
            raise ValueError("augment: every effect is off (speed, gain_db, noise_snr_db, reverb_rt60)")
        return self

    def identity(self, copy: int) -> dict[str, Any]:
        """What makes copy ``copy``'s features (the cache keys its store by this)."""
        return {**self.model_dump(mode="json", exclude={"copies"}), "copy": int(copy)}


def clip_rng(spec: AugmentSpec, copy: int, wave: np.ndarray) -> np.random.Generator:
    """The generator of one copy of one clip: the same samples give the same augmentation in
    any process and any order (the clip's samples, not its row, seed it)."""
    digest = hashlib.blake2b(np.ascontiguousarray(wave, dtype=np.float32).tobytes(), digest_size=8).digest()
    return np.random.default_rng([int(spec.seed), int(copy), int.from_bytes(digest, "little")])


def impulse_response(rt60: float, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Unit direct path + a Gaussian tail decaying 60 dB over ``rt60`` s, unit energy overall."""
    n = max(int(rt60 * sample_rate), 2)
    t = np.arange(n) / sample_rate
    tail = rng.standard_normal(n) * np.exp(-6.9078 * t / rt60)  # 10^(-60/20) = e^-6.9078 at t = rt60
    tail[0] = 0.0
    h = tail * 0.3 / max(np.sqrt(np.sum(tail ** 2)), 1e-12)
    h[0] = 1.0
    return (h / np.sqrt(np.sum(h ** 2))).astype(np.float32)


def augment_wave(wave: np.ndarray, spec: AugmentSpec, rng: np.random.Generator,
                 sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """One augmented copy of a mono float32 clip (speed, reverb, gain, then noise)."""
    out = np.asarray(wave, dtype=np.float32)
    if spec.speed is not None and rng.random() < spec.p:
        import soxr

        factor = float(rng.uniform(*spec.speed))
        # played ``factor`` times faster: read as if recorded at rate * factor
        out = soxr.resample(out, sample_rate * factor, sample_rate).astype(np.float32)
    if spec.reverb_rt60 is not None and rng.random() < spec.p:
        from scipy.signal import fftconvolve

        h = impulse_response(float(rng.uniform(*spec.reverb_rt60)), rng, sample_rate)
        out = fftconvolve(out, h)[: len(out)].astype(np.float32)
    if spec.gain_db is not None and rng.random() < spec.p:
        out = out * np.float32(10 ** (rng.uniform(-spec.gain_db, spec.gain_db) / 20))
    if spec.noise_snr_db is not None and rng.random() < spec.p:
        snr = rng.uniform(*spec.noise_snr_db)
        power = float(np.mean(out.astype(np.float64) ** 2)) or 1e-10
        out = (out + rng.standard_normal(out.size) * np.sqrt(power / 10 ** (snr / 10))).astype(np.float32)
    return out


__all__ = ["AugmentSpec", "augment_wave", "clip_rng", "impulse_response"]
