"""Voice-activity segmentation of long recordings with Silero VAD (packaged weights, offline).

The TorchScript model shipped inside the ``silero-vad`` wheel is used (no ONNX runtime, no
download). It keeps recurrent state between calls, so one lock serialises its use across
threads (the server runs inference in worker threads).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from polyemo.audio import SAMPLE_RATE


@dataclass(frozen=True)
class Segment:
    """A stretch of speech, in seconds from the start of the recording."""

    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start

    def cut(self, wave: np.ndarray) -> np.ndarray:
        return wave[int(round(self.start * SAMPLE_RATE)) : int(round(self.end * SAMPLE_RATE))]


@dataclass(frozen=True)
class VadConfig:
    """Silero VAD settings; defaults suit emotion recognition on utterance-sized pieces."""

    threshold: float = 0.5
    min_speech_seconds: float = 0.5
    # Pauses shorter than this stay inside one segment (emotion spans short breaths).
    min_silence_seconds: float = 0.3
    # Longer speech is split (at the longest pause) so segments stay utterance-sized.
    max_segment_seconds: float = 10.0
    pad_seconds: float = 0.1


_VAD_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def _vad_model() -> Any:
    import warnings

    from silero_vad import load_silero_vad

    with warnings.catch_warnings():  # its loader uses deprecated importlib/jit calls; not ours to fix
        warnings.simplefilter("ignore", DeprecationWarning)
        return load_silero_vad(onnx=False)


def speech_segments(wave: np.ndarray, config: VadConfig | None = None) -> list[Segment]:
    """Speech segments of a 16 kHz mono float32 waveform (empty when no speech is found)."""
    import torch
    from silero_vad import get_speech_timestamps

    config = config or VadConfig()
    audio = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
    with _VAD_LOCK, torch.inference_mode():
        stamps = get_speech_timestamps(
            audio,
            _vad_model(),
            threshold=config.threshold,
            sampling_rate=SAMPLE_RATE,
            min_speech_duration_ms=int(config.min_speech_seconds * 1000),
            min_silence_duration_ms=int(config.min_silence_seconds * 1000),
            max_speech_duration_s=config.max_segment_seconds,
            speech_pad_ms=int(config.pad_seconds * 1000),
        )
    total = wave.size / SAMPLE_RATE
    return [
        Segment(round(s["start"] / SAMPLE_RATE, 3), round(min(s["end"] / SAMPLE_RATE, total), 3))
        for s in stamps
    ]
