"""Tiny synthetic splits for the trainer tests."""

from __future__ import annotations

import numpy as np
import pytest

from polyemo.train import SplitData, TrainConfig


def _make_pooled(n: int, seed: int, classes: int = 3, layers: int = 2, dim: int = 6,
                informative_layer: int = 1, separation: float = 4.0) -> SplitData:
    """Gaussian blobs: only ``informative_layer`` carries the class (first ``classes`` dims)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.normal(size=(n, layers, dim)).astype(np.float32)
    x[:, informative_layer, :classes] += separation * np.eye(classes, dtype=np.float32)[y]
    speakers = np.array([f"spk{seed}_{i % 4}" for i in range(n)], dtype=object)
    return SplitData(x, y, speakers=speakers, utt_ids=np.array([f"u{seed}_{i}" for i in range(n)]))


def _make_frames(n: int, seed: int, classes: int = 3, layers: int = 2, dim: int = 5) -> SplitData:
    """Variable-length utterances whose frames are shifted by the class."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    frames = []
    for i in range(n):
        f = rng.normal(size=(layers, int(rng.integers(3, 9)), dim)).astype(np.float32)
        f[:, :, :classes] += 2.0 * np.eye(classes, dtype=np.float32)[y[i]]
        frames.append(f)
    return SplitData(frames, y, speakers=np.array([f"s{i % 3}" for i in range(n)], dtype=object))


@pytest.fixture
def quick_config():
    def make(**overrides) -> TrainConfig:
        options = {"epochs": 8, "lr": 0.05, "batch_size": 16, "warmup_ratio": 0.0, "patience": None,
                   "show_progress": False, "num_threads": 1}
        options.update(overrides)
        return TrainConfig(**options)
    return make


@pytest.fixture
def make_pooled():
    return _make_pooled


@pytest.fixture
def make_frames():
    return _make_frames
