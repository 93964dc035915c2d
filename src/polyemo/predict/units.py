"""Recordings <-> units: long audio cut into speech segments (Silero VAD), and the units'
probabilities summarised back per recording (duration-weighted mean over segments)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from polyemo.audio import SAMPLE_RATE, AudioError
from polyemo.predict.inputs import AudioItem
from polyemo.predict.results import Prediction, SegmentPrediction
from polyemo.segment import Segment, VadConfig, speech_segments


@dataclass
class Unit:
    """What the encoder sees: a whole recording (``segment`` None) or one speech segment of it."""

    item: int
    wave: np.ndarray
    segment: Segment | None


def split_units(index: int, item: AudioItem, wave: np.ndarray, vad: VadConfig, segment_above_seconds: float) -> list[Unit]:
    """Units of recording ``index``: its speech segments when segmented (forced by
    ``item.segment``, else when longer than ``segment_above_seconds``), else the whole wave."""
    duration = wave.size / SAMPLE_RATE
    wanted = item.segment if item.segment is not None else duration > segment_above_seconds
    if not wanted:
        return [Unit(index, wave, None)]
    segments = speech_segments(wave, vad)
    if not segments:
        raise AudioError(item.source, "no speech found by voice activity detection")
    return [Unit(index, segment.cut(wave), segment) for segment in segments]


def duration_weighted_mean(values: np.ndarray, durations: np.ndarray) -> np.ndarray:
    """Duration-weighted mean over segments of (segments, K) values: the utterance-level summary."""
    weights = np.asarray(durations, dtype=np.float64)
    total = weights.sum()
    if not math.isfinite(total) or total <= 0 or (weights < 0).any():
        raise ValueError(f"segment durations must be positive, got {weights}")
    return (np.asarray(values, dtype=np.float64) * (weights / total)[:, None]).sum(0)


def assemble(units: Sequence[Unit], probabilities: np.ndarray, dimensions: np.ndarray | None, sources: list[str],
             predictions: list[Prediction], classes: Sequence[str], dimension_names: Sequence[str]) -> None:
    """Fill each recording's prediction from its units' probabilities (and dimensions)."""

    def prob_dict(probs: np.ndarray) -> dict[str, float]:
        return {cls: round(float(p), 6) for cls, p in zip(classes, probs)}

    def dim_dict(values: np.ndarray) -> dict[str, float]:
        return {name: round(float(v), 6) for name, v in zip(dimension_names, values)}

    by_item: dict[int, list[int]] = {}
    for i, unit in enumerate(units):
        by_item.setdefault(unit.item, []).append(i)
    for item, rows in by_item.items():
        prediction = predictions[item]
        segmented = units[rows[0]].segment is not None
        if segmented:
            durations = np.array([units[i].segment.duration for i in rows], dtype=np.float64)
            probs = duration_weighted_mean(probabilities[rows], durations)
            dims = duration_weighted_mean(dimensions[rows], durations) if dimensions is not None else None
            prediction.segments = [
                SegmentPrediction(
                    start=units[i].segment.start,
                    end=units[i].segment.end,
                    label=classes[int(np.argmax(probabilities[i]))],
                    probabilities=prob_dict(probabilities[i]),
                    dimensions=dim_dict(dimensions[i]) if dimensions is not None else {},
                )
                for i in rows
            ]
        else:
            probs = probabilities[rows[0]]
            dims = dimensions[rows[0]] if dimensions is not None else None
        prediction.label = classes[int(np.argmax(probs))]
        prediction.probabilities = prob_dict(probs)
        if dims is not None:
            for name, value in dim_dict(dims).items():
                setattr(prediction, name, value)
        prediction.norm_source = sources[rows[0]]
