"""Fixtures for the experiment tests: a feature cache per session and a small multi-layer encoder."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from polyemo.encoders import ENCODERS
from polyemo.encoders.base import Encoder, EncoderIdentity, FrameFeatures

BANDS = 8
HOP = 320  # 20 ms at 16 kHz


class BandLayersEncoder(Encoder):
    """Three "layers" of 20 ms frames: log band energies, then two fixed tanh projections.

    Cheap and deterministic; it gives the experiment tests several layers (for learned
    layer weights and validation layer choice) without loading a neural encoder.
    """

    num_layers = 3
    frame_dim = BANDS
    pooled_dim = 2 * BANDS

    def __init__(self) -> None:
        rng = np.random.default_rng(7)
        self.projections = [rng.standard_normal((BANDS, BANDS)) / np.sqrt(BANDS) for _ in range(2)]

    @property
    def identity(self) -> EncoderIdentity:
        digest = hashlib.sha256(b"".join(p.tobytes() for p in self.projections)).hexdigest()[:16]
        return EncoderIdentity("test-band-layers", digest, "fp32", {"hop": HOP, "bands": BANDS})

    def frames(self, waves: list[np.ndarray]) -> list[FrameFeatures]:
        out = []
        for wave in waves:
            count = max(1, wave.size // HOP)
            framed = np.pad(wave, (0, count * HOP - min(wave.size, count * HOP)))[: count * HOP].reshape(count, HOP)
            spectrum = np.abs(np.fft.rfft(framed.astype(np.float64), axis=1)) ** 2
            bands = np.stack([b.sum(axis=1) for b in np.array_split(spectrum, BANDS, axis=1)], axis=1)
            hidden = np.log(bands + 1e-8)
            layers = [hidden]
            for weights in self.projections:
                hidden = np.tanh(np.einsum("fd,de->fe", hidden / 10.0, weights))
                layers.append(hidden)
            out.append(FrameFeatures(np.stack(layers).astype(np.float32), frame_rate=16_000 / HOP))
        return out


if "test-band-layers" not in ENCODERS:
    ENCODERS.register("test-band-layers")(BandLayersEncoder)


@pytest.fixture(scope="session")
def feature_cache(tmp_path_factory):
    """One feature cache for the session, so runs after the first reuse their features."""
    return tmp_path_factory.mktemp("features")


@pytest.fixture(scope="session")
def tiny_experiment(shared_corpora, feature_cache) -> dict:
    """A few EmoDB utterances, eGeMAPS functionals, logistic regression, LOSO."""
    return {
        "name": "tiny",
        "corpora": ["emodb"],
        "corpora_root": str(shared_corpora),
        "labels": "ekman7",
        "protocol": "loso",
        "encoder": {"name": "egemaps", "cache_dir": str(feature_cache)},
        "head": {"name": "logreg", "params": {"C": [0.1, 1.0]}},
        "normalisation": "speaker",
        "limit": {"per_corpus": 50},
        "metrics": {"n_boot": 50},
        "seed": 3,
    }


@pytest.fixture(scope="session")
def tiny_run(tiny_experiment, tmp_path_factory):
    from polyemo.experiment import run_experiment

    out = tmp_path_factory.mktemp("runs") / "tiny"
    return run_experiment(tiny_experiment, out, progress=False)
