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


def pool_mean_std(frames: np.ndarray, outlier_ratio: float | None = None) -> np.ndarray:
    """(layers, frames, dim) -> (layers, 2*dim): mean then standard deviation over frames.

    With ``outlier_ratio``, frames are weighted by their norm relative to the layer's median
    frame norm: weight 1 up to ``outlier_ratio / 2``, 0 from ``outlier_ratio`` on, linear in
    between. This keeps attention-sink frames ("massive activations", tens to hundreds of
    times the norm of speech frames) from dominating the statistics; the ramp keeps pooling
    continuous, so tiny numeric changes (bf16) never flip a frame in or out.
    """
    frames = frames.astype(np.float32, copy=False)
    if outlier_ratio is None or frames.shape[1] < 2:
        mean = frames.mean(axis=1)
        std = frames.std(axis=1) if frames.shape[1] > 1 else np.zeros_like(mean)
        return np.concatenate([mean, std], axis=-1)
    norms = np.linalg.norm(frames, axis=-1)  # (layers, frames)
    ratio = norms / np.maximum(np.median(norms, axis=1, keepdims=True), np.finfo(np.float32).tiny)
    weight = np.clip((outlier_ratio - ratio) / (outlier_ratio / 2), 0.0, 1.0)[..., None]
    total = weight.sum(axis=1)  # > 0: at least half the frames have ratio <= 1
    mean = (frames * weight).sum(axis=1) / total
    var = (np.square(frames - mean[:, None, :]) * weight).sum(axis=1) / total
    return np.concatenate([mean, np.sqrt(var)], axis=-1).astype(np.float32)


@dataclass
class EncoderIdentity:
    """Everything that changes an encoder's output; its key addresses the feature cache."""

    name: str
    weights_hash: str
    precision: str = "fp32"
    options: dict[str, Any] = field(default_factory=dict)
    #: the feature code's version and the library versions that change its numbers
    #: (e.g. {"feature_code": "1", "torch": "2.13.0"}); an upgrade gets a new cache key
    versions: dict[str, str] = field(default_factory=dict)

    def key(self) -> str:
        content: dict[str, Any] = {"name": self.name, "weights": self.weights_hash, "precision": self.precision,
                                   "options": self.options}
        if self.versions:
            content["versions"] = self.versions
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:20]

    def unversioned_key(self) -> str:
        """The key this identity had before versions were part of it (stores of older polyemo)."""
        return EncoderIdentity(self.name, self.weights_hash, self.precision, self.options).key()

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "weights_hash": self.weights_hash, "precision": self.precision,
                "options": self.options, "versions": self.versions, "key": self.key()}


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
    #: frames per second of :meth:`frames` (0 without frames)
    frame_rate: float = 0.0

    @property
    @abstractmethod
    def identity(self) -> EncoderIdentity:
        """Name, weights hash, precision and output-changing options."""

    @abstractmethod
    def frames(self, waves: list[np.ndarray]) -> list[FrameFeatures]:
        """Per-layer frame features for each 16 kHz mono float32 waveform."""

    def pool(self, layers: np.ndarray) -> np.ndarray:
        """(num_layers, frames, frame_dim) -> (num_layers, pooled_dim): this encoder's pooling.

        Use it to pool frames cached from :meth:`frames`; it equals what :meth:`pooled` returns.
        """
        return pool_mean_std(layers)

    def pooled(self, waves: list[np.ndarray]) -> np.ndarray:
        """(batch, num_layers, pooled_dim) float32 utterance features."""
        return np.stack([self.pool(f.layers) for f in self.frames(waves)])

    def load(self) -> None:
        """Load weights now rather than on the first batch (a no-op where nothing loads lazily):
        extraction calls it only when something is to be computed, before its clock starts."""

    # --- stopping at the last layer needed ----------------------------------------------
    #: True when :meth:`frames_upto` runs only the blocks it needs (others compute all layers)
    stops_early: bool = False

    def last_layer(self, layers: list[int] | None) -> int | None:
        """The deepest of ``layers`` (non-negative indices), or None when that is the last layer
        anyway or this encoder computes all layers whatever is asked."""
        if not layers or not self.stops_early:
            return None
        deepest = max(layers)
        return deepest if deepest < self.num_layers - 1 else None

    def frames_upto(self, waves: list[np.ndarray], last_layer: int | None) -> list[FrameFeatures]:
        """Frames of layers ``0..last_layer`` (all with None). Layer k is the same array as in a
        full run: encoders with ``stops_early`` just do not run the blocks after it."""
        frames = self.frames(waves)
        if last_layer is None:
            return frames
        return [FrameFeatures(f.layers[: last_layer + 1], f.frame_rate) for f in frames]

    def pooled_upto(self, waves: list[np.ndarray], last_layer: int | None) -> np.ndarray:
        """(batch, last_layer + 1, pooled_dim): :meth:`pooled` of layers ``0..last_layer``."""
        if last_layer is None:
            return self.pooled(waves)
        if not self.stops_early:
            return self.pooled(waves)[:, : last_layer + 1]
        return np.stack([self.pool(f.layers) for f in self.frames_upto(waves, last_layer)])
