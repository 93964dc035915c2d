"""The one audio loader: any common format -> mono float32 at 16 kHz.

Decoding uses soundfile (libsndfile: wav, flac, ogg/vorbis/opus, mp3), resampling soxr.
Every problem is an :class:`AudioError` that names the file, so batch callers can record
it and carry on.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16_000
# Peak below -80 dBFS counts as digital silence; quiet acted speech (RAVDESS, -50 dBFS
# active level) stays well above it.
SILENCE_PEAK = 1e-4
MIN_SECONDS = 0.1


class AudioError(ValueError):
    """Audio that cannot be used; ``path`` and ``reason`` say which file and why."""

    def __init__(self, path: str | os.PathLike[str] | None, reason: str) -> None:
        self.path = str(path) if path is not None else "<array>"
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def decode(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """Decode a file to float32 (frames, channels) and its sample rate."""
    path = Path(path)
    if not path.exists():
        raise AudioError(path, "file not found")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file (0 bytes)")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile's errors are many and untyped
        raise AudioError(path, f"cannot decode audio ({exc})") from exc
    return data, int(rate)


def to_mono_16k(data: np.ndarray, rate: int, path: str | os.PathLike[str] | None = None) -> np.ndarray:
    """Average channels and resample to 16 kHz (soxr, high quality)."""
    data = np.asarray(data, dtype=np.float32)
    if data.ndim == 2:
        data = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if data.ndim != 1:
        raise AudioError(path, f"expected 1-D or 2-D (frames, channels) audio, got shape {data.shape}")
    if not np.all(np.isfinite(data)):
        raise AudioError(path, "audio contains NaN or infinite samples")
    if rate != SAMPLE_RATE:
        if rate <= 0:
            raise AudioError(path, f"invalid sample rate {rate}")
        data = soxr.resample(data, rate, SAMPLE_RATE, quality="HQ").astype(np.float32)
    return np.ascontiguousarray(data, dtype=np.float32)


def check_usable(wave: np.ndarray, path: str | os.PathLike[str] | None = None, min_seconds: float = MIN_SECONDS) -> None:
    """Raise :class:`AudioError` for empty, too-short or all-silent audio."""
    if wave.size == 0:
        raise AudioError(path, "no audio samples (empty)")
    seconds = wave.size / SAMPLE_RATE
    if seconds < min_seconds:
        raise AudioError(path, f"too short: {seconds:.3f} s < {min_seconds} s")
    if float(np.max(np.abs(wave))) < SILENCE_PEAK:
        raise AudioError(path, "all-silent audio (peak below -80 dBFS)")


def fix_length(wave: np.ndarray, seconds: float, mode: str = "start") -> np.ndarray:
    """Crop or zero-pad to exactly ``seconds``; ``mode`` 'start' or 'center' picks the crop."""
    target = int(round(seconds * SAMPLE_RATE))
    if wave.size > target:
        offset = 0 if mode == "start" else (wave.size - target) // 2
        return wave[offset : offset + target]
    if wave.size < target:
        return np.pad(wave, (0, target - wave.size))
    return wave


def load_audio(
    source: str | os.PathLike[str] | np.ndarray,
    sample_rate: int | None = None,
    *,
    seconds: float | None = None,
    crop: str = "start",
    min_seconds: float = MIN_SECONDS,
    check: bool = True,
) -> np.ndarray:
    """Load a file (or take an array at ``sample_rate``) as mono float32 16 kHz.

    ``seconds`` crops or pads to a fixed length. With ``check`` (default), unreadable,
    empty, too-short or all-silent audio raises :class:`AudioError` naming the file.
    """
    if isinstance(source, np.ndarray):
        path = None
        wave = to_mono_16k(source, sample_rate or SAMPLE_RATE)
    else:
        path = source
        data, rate = decode(source)
        wave = to_mono_16k(data, rate, path)
    if check:
        check_usable(wave, path, min_seconds)
    if seconds is not None:
        wave = fix_length(wave, seconds, crop)
    return wave


def pcm_hash(wave: np.ndarray) -> str:
    """Content hash of 16 kHz mono audio: SHA-256 of its 16-bit PCM (first 32 hex digits).

    The same recording stored as WAV or FLAC (or twice under two names) gets one hash.
    """
    pcm = np.clip(np.round(np.asarray(wave, dtype=np.float64) * 32768.0), -32768, 32767).astype("<i2")
    return hashlib.sha256(pcm.tobytes()).hexdigest()[:32]


def content_hash(path: str | os.PathLike[str]) -> str:
    """Hash of the decoded 16 kHz PCM of a file (no usability checks: silent files hash too)."""
    data, rate = decode(path)
    return pcm_hash(to_mono_16k(data, rate, path))
