"""A tiny deterministic encoder for the cache tests: fixed random projections of framed audio.

It lives in its own top-level module (the tests put this folder on ``sys.path``) so that
subprocesses and spawned extraction workers can import it by name.
"""

from __future__ import annotations

import hashlib
import time

import numpy as np

from polyemo.encoders.base import Encoder, EncoderIdentity, FrameFeatures

WINDOW = 400  # 25 ms at 16 kHz
HOP = 160  # 10 ms


class ToyEncoder(Encoder):
    """Three "layers": log-magnitude projection of 25 ms frames, then two tanh projections."""

    num_layers = 3
    frame_dim = 8
    pooled_dim = 16

    def __init__(self, delay: float = 0.0) -> None:
        rng = np.random.default_rng(1234)
        self.input_weights = rng.standard_normal((WINDOW, self.frame_dim)) / np.sqrt(WINDOW)
        self.layer_weights = [rng.standard_normal((self.frame_dim, self.frame_dim)) for _ in range(2)]
        self.delay = delay  # seconds per call, to make a run slow enough to kill half-way
        self.calls = 0  # encoder calls in this process
        self.items = 0  # waveforms encoded in this process

    @property
    def identity(self) -> EncoderIdentity:
        digest = hashlib.sha256(self.input_weights.tobytes() + b"".join(w.tobytes() for w in self.layer_weights))
        return EncoderIdentity("toy-projection", digest.hexdigest()[:16], "fp32", {"window": WINDOW, "hop": HOP})

    def frames(self, waves: list[np.ndarray]) -> list[FrameFeatures]:
        self.calls += 1
        self.items += len(waves)
        if self.delay:
            time.sleep(self.delay)
        out = []
        for wave in waves:
            count = 1 + max(0, (wave.size - WINDOW) // HOP)
            padded = np.pad(wave.astype(np.float64), (0, max(0, WINDOW - wave.size)))
            framed = np.lib.stride_tricks.sliding_window_view(padded, WINDOW)[::HOP][:count]
            # einsum without BLAS: bit-identical results in every process and thread setting
            hidden = np.log1p(np.abs(np.einsum("fw,wd->fd", framed, self.input_weights)))
            layers = [hidden]
            for weights in self.layer_weights:
                hidden = np.tanh(np.einsum("fd,de->fe", hidden, weights))
                layers.append(hidden)
            out.append(FrameFeatures(np.stack(layers).astype(np.float32), frame_rate=16_000 / HOP))
        return out


class StoppingToyEncoder(ToyEncoder):
    """The toy encoder that stops after the last layer asked for, and records how deep it went."""

    stops_early = True

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__(delay)
        self.deepest: list[int] = []  # the last layer computed, per call

    def frames_upto(self, waves, last_layer):
        full = self.frames(waves)
        self.deepest[-1] = last_layer if last_layer is not None else self.num_layers - 1
        if last_layer is None:
            return full
        return [FrameFeatures(f.layers[: last_layer + 1], f.frame_rate) for f in full]

    def frames(self, waves):
        self.deepest.append(self.num_layers - 1)
        return super().frames(waves)


class BrokenToyEncoder(ToyEncoder):
    """Fails on every batch (as an encoder that runs out of memory on a node)."""

    def frames(self, waves):
        raise MemoryError("no memory on that node")
