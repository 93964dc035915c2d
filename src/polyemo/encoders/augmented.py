"""An encoder of augmented audio: copy ``k`` of each clip (:mod:`polyemo.augment`), then the base
encoder. Its identity is the base identity plus the augmentation and the copy number, so the
feature cache keeps every copy in a store of its own and computes it once."""

from __future__ import annotations

import dataclasses

import numpy as np

from polyemo.augment import AugmentSpec, augment_wave, clip_rng
from polyemo.encoders.base import Encoder, EncoderIdentity, FrameFeatures

#: bump when augment_wave changes its output for the same settings (new cache keys)
AUGMENT_CODE_VERSION = "1"


class AugmentedEncoder(Encoder):
    def __init__(self, base: Encoder, spec: AugmentSpec, copy: int) -> None:
        if not 0 <= copy < spec.copies:
            raise ValueError(f"copy {copy} of {spec.copies} augmented copies")
        self.base, self.spec, self.copy = base, spec, int(copy)
        for name in ("sample_rate", "num_layers", "frame_dim", "pooled_dim", "has_frames", "frame_rate", "stops_early"):
            setattr(self, name, getattr(base, name))

    @property
    def identity(self) -> EncoderIdentity:
        base = self.base.identity
        return dataclasses.replace(
            base, name=f"{base.name}+augment",
            options={**base.options, "augment": self.spec.identity(self.copy)},
            versions={**base.versions, "augment_code": AUGMENT_CODE_VERSION})

    def augment(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        return [augment_wave(w, self.spec, clip_rng(self.spec, self.copy, w), self.sample_rate) for w in waves]

    def load(self) -> None:
        self.base.load()

    def pool(self, layers: np.ndarray) -> np.ndarray:
        return self.base.pool(layers)

    def frames(self, waves: list[np.ndarray]) -> list[FrameFeatures]:
        return self.base.frames(self.augment(waves))

    def pooled(self, waves: list[np.ndarray]) -> np.ndarray:
        return self.base.pooled(self.augment(waves))

    def last_layer(self, layers: list[int] | None) -> int | None:
        return self.base.last_layer(layers)

    def frames_upto(self, waves: list[np.ndarray], last_layer: int | None) -> list[FrameFeatures]:
        return self.base.frames_upto(self.augment(waves), last_layer)

    def pooled_upto(self, waves: list[np.ndarray], last_layer: int | None) -> np.ndarray:
        return self.base.pooled_upto(self.augment(waves), last_layer)


__all__ = ["AUGMENT_CODE_VERSION", "AugmentedEncoder"]
