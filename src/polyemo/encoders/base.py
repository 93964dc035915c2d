"""The encoder interface: 16 kHz waveforms in, per-layer features out.

Every encoder returns, for a batch, frame features per layer (layers x frames x dim, with
the number of valid frames) and pooled utterance features per layer. For neural encoders
pooling is mean and standard deviation over valid frames (dim*2 per layer); functionals
(openSMILE eGeMAPS, ComParE) are already utterance-level and are their own pooled
features (one "layer").
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class FrameFeatures:
    """Frame features of one utterance: ``layers`` (n_layers, frames, dim) float32."""

    layers: np.ndarray
    frame_rate: float  # frames per second


def pool_mean_std(frames: np.ndarray) -> np.ndarray:
    """(layers, frames, dim) -> (layers, 2*dim): mean then standard deviation over frames."""
    frames = frames.astype(np.float32, copy=False)
    mean = frames.mean(axis=1)
    std = frames.std(axis=1) if frames.shape[1] > 1 else np.zeros_like(mean)
    return np.concatenate([mean, std], axis=-1)


@dataclass
class EncoderIdentity:
    """Everything that changes an encoder's output; its key addresses the feature cache."""

    name: str
    weights_hash: str
    precision: str = "fp32"
    options: dict[str, Any] = field(default_factory=dict)

    def key(self) -> str:
        blob = json.dumps(
            {"name": self.name, "weights": self.weights_hash, "precision": self.precision, "options": self.options},
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:20]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "weights_hash": self.weights_hash, "precision": self.precision,
                "options": self.options, "key": self.key()}


class Encoder(ABC):
    """Base class of all encoders (registered in ``polyemo.encoders.ENCODERS``)."""

    sample_rate: int = 16_000
    #: number of layers returned (hidden states incl. the input embedding for transformers)
    num_layers: int
    #: feature size of one layer's frames
    frame_dim: int
    #: size of one layer's pooled feature vector
    pooled_dim: int
    #: False for functionals-only encoders (no frame-level output)
    has_frames: bool = True

    @property
    @abstractmethod
    def identity(self) -> EncoderIdentity:
        """Name, weights hash, precision and output-changing options."""

    @abstractmethod
    def frames(self, waves: list[np.ndarray]) -> list[FrameFeatures]:
        """Per-layer frame features for each 16 kHz mono float32 waveform."""

    def pooled(self, waves: list[np.ndarray]) -> np.ndarray:
        """(batch, num_layers, pooled_dim) float32 utterance features."""
        return np.stack([pool_mean_std(f.layers) for f in self.frames(waves)])
