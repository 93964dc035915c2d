"""openSMILE feature sets: eGeMAPS and ComParE functionals, eGeMAPS low-level descriptors.

- ``egemaps``: eGeMAPSv02 functionals, 88 values per utterance (Eyben et al. 2016).
- ``compare``: ComParE_2016 functionals, 6373 values per utterance.
- ``egemaps-lld``: the 25 eGeMAPSv02 low-level descriptors at 100 frames per second;
  pooled features are their mean and standard deviation (50 values).

Functionals are utterance-level already: one "layer", no frames (``has_frames`` False).
The identity's weights hash covers the opensmile version and its configuration files.

openSMILE runs each waveform in a fresh native instance through ctypes, which releases the
GIL, so a batch is spread over ``threads`` threads of one process (default: the CPUs this
process may use, or ``$OMP_NUM_THREADS`` when set, as extraction workers set it). Features
do not depend on the thread count.
"""

from __future__ import annotations

import functools
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from polyemo.encoders import ENCODERS
from polyemo.encoders.base import Encoder, EncoderIdentity, FrameFeatures, pool_mean_std

# openSMILE's short-time analysis needs a few frames; shorter input yields no LLD frames.
MIN_SAMPLES = 1600  # 0.1 s


def default_threads() -> int:
    """``$OMP_NUM_THREADS`` when set (extraction workers set it to their share), else the usable CPUs."""
    try:
        value = int(os.environ.get("OMP_NUM_THREADS", ""))
        if value >= 1:
            return value
    except ValueError:
        pass
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@functools.lru_cache(maxsize=1)
def _config_hash() -> str:
    import opensmile

    root = Path(opensmile.__file__).parent / "core" / "config"
    digest = hashlib.sha256(f"opensmile=={opensmile.__version__}\n".encode())
    for path in sorted(root.rglob("*")):
        if path.is_file():
            digest.update(f"{path.relative_to(root)}\n".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


class OpenSmileEncoder(Encoder):
    """One openSMILE feature set at one feature level, on 16 kHz mono float32 waveforms."""

    def __init__(self, name: str, feature_set: str, level: str, threads: int | None = None) -> None:
        import opensmile

        if threads is not None and threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        self.threads = threads or default_threads()
        self.name = name
        self.feature_set = feature_set
        self.level = level
        self.smile = opensmile.Smile(feature_set=opensmile.FeatureSet[feature_set],
                                     feature_level=opensmile.FeatureLevel[level])
        self.feature_names: list[str] = list(self.smile.feature_names)
        self.num_layers = 1
        self.frame_dim = len(self.feature_names)
        self.has_frames = level == "LowLevelDescriptors"
        self.pooled_dim = 2 * self.frame_dim if self.has_frames else self.frame_dim
        self.frame_rate = 100.0 if self.has_frames else 0.0

    @property
    def identity(self) -> EncoderIdentity:
        return EncoderIdentity(self.name, _config_hash(), "fp32", {"feature_set": self.feature_set, "level": self.level})

    def _process(self, wave: np.ndarray, index: int) -> np.ndarray:
        wave = np.asarray(wave, dtype=np.float32)
        if wave.ndim != 1 or wave.size < MIN_SAMPLES:
            raise ValueError(f"wave {index}: expected a 1-D 16 kHz waveform of at least {MIN_SAMPLES} samples, "
                             f"got shape {wave.shape}")
        if not np.all(np.isfinite(wave)):
            raise ValueError(f"wave {index}: contains NaN or infinite samples")
        values = self.smile(wave, self.sample_rate)  # (channels=1, features[, frames])
        return np.asarray(values, dtype=np.float32)[0]

    def _process_all(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        """``_process`` of every wave, in input order, on up to ``threads`` threads."""
        threads = min(self.threads, len(waves))
        if threads <= 1:
            return [self._process(w, i) for i, w in enumerate(waves)]
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="polyemo-opensmile") as pool:
            return list(pool.map(self._process, waves, range(len(waves))))

    def frames(self, waves: list[np.ndarray]) -> list[FrameFeatures]:
        if not self.has_frames:
            raise NotImplementedError(f"{self.name} gives utterance-level functionals only; use pooled()")
        # (frames, features) per wave, as one layer
        return [FrameFeatures(layers=lld.T[None], frame_rate=self.frame_rate) for lld in self._process_all(waves)]

    def pooled(self, waves: list[np.ndarray]) -> np.ndarray:
        if self.has_frames:
            return np.stack([self.pool(f.layers) for f in self.frames(waves)])
        return np.stack([values.reshape(1, -1) for values in self._process_all(waves)])

    def pool(self, layers: np.ndarray) -> np.ndarray:
        if not self.has_frames:
            raise NotImplementedError(f"{self.name} gives utterance-level functionals only")
        return pool_mean_std(layers)

    def __repr__(self) -> str:
        return f"OpenSmileEncoder({self.name!r}, {self.feature_set}, {self.level})"


@ENCODERS.register("egemaps", "egemaps-functionals")
def egemaps(threads: int | None = None) -> OpenSmileEncoder:
    """eGeMAPSv02 functionals (88-d)."""
    return OpenSmileEncoder("egemaps", "eGeMAPSv02", "Functionals", threads)


@ENCODERS.register("compare", "compare-2016")
def compare(threads: int | None = None) -> OpenSmileEncoder:
    """ComParE_2016 functionals (6373-d)."""
    return OpenSmileEncoder("compare", "ComParE_2016", "Functionals", threads)


@ENCODERS.register("egemaps-lld")
def egemaps_lld(threads: int | None = None) -> OpenSmileEncoder:
    """eGeMAPSv02 low-level descriptors (25-d frames at 100 Hz; pooled mean+std, 50-d)."""
    return OpenSmileEncoder("egemaps-lld", "eGeMAPSv02", "LowLevelDescriptors", threads)
