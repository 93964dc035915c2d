"""The one audio loader: any common format -> mono float32 at 16 kHz, within limits.

Decoding uses soundfile (libsndfile: wav, flac, ogg/vorbis/opus, mp3), resampling soxr.
Every problem is an :class:`AudioError` that names the file, so batch callers can record
it and carry on.

Decoding is bounded: the header (frames, rate, channels) is read first and checked against
:class:`AudioLimits` before any sample is decoded; then the file is decoded in blocks of
``BLOCK_FRAMES``, each block down-mixed and fed to a streaming resampler, so memory is the
16 kHz mono output plus one block, whatever the source's rate and channel count (a 1.7 MB
FLAC of 600 s x 8 channels x 192 kHz would otherwise be 3.7 GB of float32). Streaming soxr
gives exactly the samples of one-shot soxr, so content hashes do not change. The CLI, the
Python API and the server all call :func:`read_audio`.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16_000
# Peak below -80 dBFS counts as digital silence; quiet acted speech (RAVDESS, -50 dBFS
# active level) stays well above it.
SILENCE_PEAK = 1e-4
MIN_SECONDS = 0.1
#: Float files can hold any value; beyond +60 dB over full scale a sample is not audio but damage
#: (the fuzzer's 1e38 samples made the encoders' features overflow to inf), so it is refused.
MAX_AMPLITUDE = 1000.0
#: frames decoded per block (at the source rate): 64 Ki frames x 8 channels x 4 bytes = 2 MiB
BLOCK_FRAMES = 1 << 16

AudioSource = str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO


class AudioError(ValueError):
    """Audio that cannot be used; ``path`` and ``reason`` say which file and why.

    ``code`` is a short machine-readable cause (``undecodable``, ``empty``, ``silent``,
    ``too_short``, ``not_found``, ``non_finite``, ``out_of_range`` and the limits' codes of :class:`AudioLimitError`).
    """

    code: str = "undecodable"

    def __init__(self, path: str | os.PathLike[str] | None, reason: str, code: str | None = None) -> None:
        self.path = str(path) if path is not None else "<array>"
        self.reason = reason
        if code is not None:
            self.code = code
        super().__init__(f"{self.path}: {reason}")


class AudioLimitError(AudioError):
    """Audio refused by :class:`AudioLimits` (``code``: too_long, decoded_too_large, sample_rate,
    channels) or by the decoding deadline (``timeout``), before or while decoding."""


@dataclass(frozen=True)
class AudioLimits:
    """What the loader accepts; checked on the header before decoding and again while decoding
    (headers can lie or understate, e.g. MP3 estimates).

    ``max_decoded_bytes`` bounds the PCM the decoder produces at the source rate
    (frames x channels x 4 bytes of float32): the work a small compressed file can demand.
    ``max_seconds`` bounds the duration (so the 16 kHz output: 64 kB a second). None: no limit.
    """

    max_seconds: float | None = 4 * 3600.0
    max_sample_rate: int = 192_000
    max_channels: int = 8
    max_decoded_bytes: int | None = 16 * 1024**3

    def check(self, info: AudioInfo, name: str | None) -> None:
        """Refuse, by the header alone, audio over the limits."""
        if info.sample_rate <= 0:
            raise AudioError(name, f"invalid sample rate {info.sample_rate} in the header")
        if info.sample_rate > self.max_sample_rate:
            raise AudioLimitError(name, f"sample rate {info.sample_rate:,} Hz exceeds the limit of "
                                        f"{self.max_sample_rate:,} Hz", "sample_rate")
        if info.channels <= 0:
            raise AudioError(name, f"invalid channel count {info.channels} in the header")
        if info.channels > self.max_channels:
            raise AudioLimitError(name, f"{info.channels} channels exceed the limit of {self.max_channels}",
                                  "channels")
        if not info.length_known:  # "unknown" (e.g. FLAC with 0 total samples): checked while decoding
            return
        if self.max_seconds is not None and info.seconds > self.max_seconds:
            raise _too_long(name, info.seconds, self.max_seconds)
        if self.max_decoded_bytes is not None and info.decoded_bytes > self.max_decoded_bytes:
            raise _too_big(name, info.decoded_bytes, self.max_decoded_bytes)


#: the limits of :func:`load_audio` and the CLI (the server sets its own, smaller ones)
DEFAULT_LIMITS = AudioLimits()


@dataclass(frozen=True)
class AudioInfo:
    """What a file's header says (``frames`` may be an estimate for MP3)."""

    frames: int
    sample_rate: int
    channels: int
    format: str

    @property
    def length_known(self) -> bool:
        # libsndfile reports an unknown length as SF_COUNT_MAX (2**63 - 1)
        return 0 <= self.frames < 2**62

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate > 0 else 0.0

    @property
    def decoded_bytes(self) -> int:
        return max(self.frames, 0) * max(self.channels, 0) * 4


def _too_long(name: str | None, seconds: float, max_seconds: float) -> AudioLimitError:
    return AudioLimitError(name, f"{seconds:.1f} s of audio exceeds the limit of {max_seconds:g} s", "too_long")


def _too_big(name: str | None, decoded: int, limit: int) -> AudioLimitError:
    return AudioLimitError(name, f"decodes to {decoded:,} bytes of PCM (frames x channels x 4), over the limit of "
                                 f"{limit:,} bytes", "decoded_too_large")


def _open(source: AudioSource, name: str | None) -> tuple[sf.SoundFile, str]:
    """An open SoundFile and the name errors use; clear errors for missing, empty and undecodable input."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        label = name or "<bytes>"
        if len(source) == 0:
            raise AudioError(label, "empty file (0 bytes)", "empty")
        handle: str | BinaryIO = io.BytesIO(bytes(source))
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        label = name or str(path)
        if not path.exists():
            raise AudioError(label, "file not found", "not_found")
        if not path.is_file():
            raise AudioError(label, "not a regular file")
        if path.stat().st_size == 0:
            raise AudioError(label, "empty file (0 bytes)", "empty")
        handle = str(path)
    else:
        label = name or str(getattr(source, "name", "<stream>"))
        handle = source
    try:
        return sf.SoundFile(handle), label
    except Exception as exc:  # libsndfile's errors are many and untyped
        raise AudioError(label, f"cannot decode audio ({_short(exc)})") from exc


def _short(exc: BaseException) -> str:
    """libsndfile's own reason (not soundfile's "Error opening <object at 0x...>" wrapper), short."""
    text = getattr(exc, "error_string", None) or str(exc)
    return " ".join(str(text).split())[:200]


def probe(source: AudioSource, name: str | None = None) -> AudioInfo:
    """The header of a file (or bytes): frames, sample rate, channels, format; nothing decoded."""
    handle, _ = _open(source, name)
    with handle:
        return AudioInfo(int(handle.frames), int(handle.samplerate), int(handle.channels), str(handle.format))


def read_audio(source: AudioSource, *, limits: AudioLimits | None = None, name: str | None = None,
               deadline: float | None = None) -> np.ndarray:
    """Decode a file, bytes or a binary stream to mono float32 16 kHz within ``limits``.

    The header is checked first; then blocks are decoded, averaged over channels, checked
    for NaN/inf and resampled as a stream, with the limits re-checked on what is actually
    decoded. ``deadline`` (a :func:`time.monotonic` value) stops a decode that runs too long.
    ``name`` replaces the path in error messages (uploads). No usability checks (see
    :func:`check_usable`).
    """
    limits = limits or DEFAULT_LIMITS
    handle, label = _open(source, name)
    with handle:
        info = AudioInfo(int(handle.frames), int(handle.samplerate), int(handle.channels), str(handle.format))
        limits.check(info, label)
        rate, channels = info.sample_rate, info.channels
        # Streaming soxr gives exactly one-shot soxr's samples (tests/test_audio_bounded.py).
        resampler = None if rate == SAMPLE_RATE else soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32",
                                                                         quality="HQ")
        max_out = None if limits.max_seconds is None else int(limits.max_seconds * SAMPLE_RATE) + SAMPLE_RATE // 100
        # libsndfile 1.2's MPEG decoder loses samples at the boundaries of partial reads (a
        # 440 Hz tone read in blocks of 100 frames comes back 28 % RMS wrong), so MP3 is read in
        # one go: the frames its header (already checked) gives, and MPEG audio has at most
        # 2 channels at 48 kHz, so that one block is bounded too.
        whole = info.format.upper() in ("MP3", "MPEG")
        if whole and not info.length_known:
            raise AudioError(label, "MP3 without a known length cannot be decoded safely")
        block_frames = max(info.frames, 1) if whole else BLOCK_FRAMES
        pieces: list[np.ndarray] = []
        produced = decoded = 0
        while True:
            if deadline is not None and time.monotonic() > deadline:
                raise AudioLimitError(label, "decoding took longer than the time allowed", "timeout")
            try:
                block = handle.read(block_frames, dtype="float32", always_2d=True)
            except Exception as exc:  # a truncated or corrupt stream fails mid-way
                raise AudioError(label, f"cannot decode audio ({_short(exc)})") from exc
            decoded += block.size * 4
            if limits.max_decoded_bytes is not None and decoded > limits.max_decoded_bytes:
                raise _too_big(label, decoded, limits.max_decoded_bytes)
            last = whole or len(block) < block_frames
            mono = block.mean(axis=1) if channels > 1 else block[:, 0]
            mono = np.ascontiguousarray(mono, dtype=np.float32)
            _check_samples(mono, label)
            piece = mono if resampler is None else resampler.resample_chunk(mono, last=last)
            if piece.size:
                pieces.append(piece)
                produced += piece.size
            if max_out is not None and produced > max_out:  # the header understated the length
                raise _too_long(label, produced / SAMPLE_RATE, limits.max_seconds)
            if last:
                break
    if not pieces:
        return np.zeros(0, dtype=np.float32)
    return np.ascontiguousarray(np.concatenate(pieces), dtype=np.float32)


def _check_samples(wave: np.ndarray, label: str | os.PathLike[str] | None) -> None:
    peak = float(np.max(np.abs(wave))) if wave.size else 0.0
    if peak <= MAX_AMPLITUDE:  # False for NaN too
        return
    if not np.all(np.isfinite(wave)):
        raise AudioError(label, "audio contains NaN or infinite samples", "non_finite")
    raise AudioError(label, f"sample values up to {peak:.3g} (full scale is 1; more than {MAX_AMPLITUDE:g} is "
                            "not audio)", "out_of_range")


def decode(path: str | os.PathLike[str], limits: AudioLimits | None = None) -> tuple[np.ndarray, int]:
    """Decode a file to float32 (frames, channels) at its own rate, refusing by the header what is over
    ``limits``. The whole file is held at its rate and channels: prefer :func:`read_audio`."""
    handle, label = _open(path, None)
    with handle:
        info = AudioInfo(int(handle.frames), int(handle.samplerate), int(handle.channels), str(handle.format))
        (limits or DEFAULT_LIMITS).check(info, label)
        try:
            data = handle.read(dtype="float32", always_2d=True)
        except Exception as exc:
            raise AudioError(label, f"cannot decode audio ({_short(exc)})") from exc
    return data, info.sample_rate


def to_mono_16k(data: np.ndarray, rate: int, path: str | os.PathLike[str] | None = None) -> np.ndarray:
    """Average channels and resample to 16 kHz (soxr, high quality)."""
    data = np.asarray(data, dtype=np.float32)
    if data.ndim == 2:
        data = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if data.ndim != 1:
        raise AudioError(path, f"expected 1-D or 2-D (frames, channels) audio, got shape {data.shape}")
    _check_samples(data, path)
    if rate != SAMPLE_RATE:
        if rate <= 0 or rate > DEFAULT_LIMITS.max_sample_rate:
            raise AudioError(path, f"invalid sample rate {rate}", "sample_rate")
        data = soxr.resample(data, rate, SAMPLE_RATE, quality="HQ").astype(np.float32)
    return np.ascontiguousarray(data, dtype=np.float32)


def check_usable(wave: np.ndarray, path: str | os.PathLike[str] | None = None, min_seconds: float = MIN_SECONDS) -> None:
    """Raise :class:`AudioError` for empty, too-short or all-silent audio."""
    if wave.size == 0:
        raise AudioError(path, "no audio samples (empty)", "empty")
    seconds = wave.size / SAMPLE_RATE
    if seconds < min_seconds:
        raise AudioError(path, f"too short: {seconds:.3f} s < {min_seconds} s", "too_short")
    if float(np.max(np.abs(wave))) < SILENCE_PEAK:
        raise AudioError(path, "all-silent audio (peak below -80 dBFS)", "silent")


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
    limits: AudioLimits | None = None,
) -> np.ndarray:
    """Load a file (or take an array at ``sample_rate``) as mono float32 16 kHz.

    ``seconds`` crops or pads to a fixed length. With ``check`` (default), unreadable,
    empty, too-short or all-silent audio raises :class:`AudioError` naming the file. Files are
    decoded by :func:`read_audio` within ``limits`` (default :data:`DEFAULT_LIMITS`).
    """
    if isinstance(source, np.ndarray):
        path = None
        wave = to_mono_16k(source, sample_rate or SAMPLE_RATE)
    else:
        path = source
        wave = read_audio(source, limits=limits)
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
    return pcm_hash(read_audio(path))
