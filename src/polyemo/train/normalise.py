"""Feature normalisation before a head: global, per speaker, or per utterance.

* ``global``: mean/std per layer and dimension, fitted on the TRAINING split only.
* ``speaker``: each speaker's features are standardised with that speaker's own mean/std,
  computed from their (unlabelled) features in the split being transformed -- the training
  speakers in training, the test speakers at test time (PolEval 2025 winner's idea). No
  labels are used, so it is legitimate on test data. Speakers with fewer than
  ``min_utterances`` utterances in a call (or unknown speakers) fall back to statistics
  stored for that speaker by an earlier call, else to the global training statistics.
* ``utterance``: each utterance on its own, over its frames (``axis="frames"``, per
  dimension, i.e. CMVN) or over its feature dimensions (``axis="features"``, per frame or
  per pooled vector); needs no speakers and no fitting.

Statistics are per layer and dimension, computed in float64 over pooled rows or over all
valid frames. Every normaliser saves and loads its statistics as arrays (``.npz``), so the
same transform runs at prediction time.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable
from typing import ClassVar, Literal

import numpy as np
import pandas as pd

from polyemo.io import atomic_path
from polyemo.train.data import SplitData

NormalisationKind = Literal["none", "global", "speaker", "utterance"]
_TINY = 1e-8


def _safe_std(std: np.ndarray) -> np.ndarray:
    # Constant dimensions keep scale 1 (as scikit-learn's StandardScaler does).
    return np.where(std < _TINY, 1.0, std)


def moments(features, index: Iterable[int] | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Mean and std (L, D) over the pooled rows or all frames of ``index``, and the unit count."""
    if isinstance(features, np.ndarray):
        x = features if index is None else features[np.asarray(list(index), dtype=np.int64)]
        if len(x) == 0:
            raise ValueError("no rows to compute statistics from")
        x = x.astype(np.float64)
        return x.mean(0), x.std(0), len(x)
    rows = range(len(features)) if index is None else index
    total = total_sq = None
    count = 0
    for i in rows:
        f = np.asarray(features[i], dtype=np.float64)  # (L, T, D)
        s, ss = f.sum(1), (f * f).sum(1)
        total = s if total is None else total + s
        total_sq = ss if total_sq is None else total_sq + ss
        count += f.shape[1]
    if count == 0:
        raise ValueError("no frames to compute statistics from")
    mean = total / count
    var = np.maximum(total_sq / count - mean * mean, 0.0)
    return mean, np.sqrt(var), count


def _apply(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Standardise pooled rows (N, L, D) with (L, D) or (N, L, D) statistics."""
    return ((x - mean) / _safe_std(std)).astype(np.float32)


def _apply_frames(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Standardise one utterance's frames (L, T, D) with (L, D) statistics."""
    return ((x - mean[:, None, :]) / _safe_std(std)[:, None, :]).astype(np.float32)


def _is_unknown(speaker) -> bool:
    return speaker is None or (not isinstance(speaker, str) and pd.isna(speaker)) or speaker == ""


class Normaliser:
    """Base: ``fit`` on training data, ``transform`` any split, ``save``/``load`` statistics."""

    kind: ClassVar[str] = ""

    def fit(self, train: SplitData) -> Normaliser:
        return self

    def transform(self, data: SplitData) -> SplitData:
        raise NotImplementedError

    def state(self) -> dict[str, np.ndarray]:
        return {}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        pass

    def save(self, path: str | os.PathLike[str]) -> None:
        arrays = {"kind": np.array(self.kind), **self.state()}
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **arrays)

    @staticmethod
    def load(path: str | os.PathLike[str]) -> Normaliser:
        try:
            with np.load(path, allow_pickle=False) as archive:
                state = {key: archive[key] for key in archive.files}
        except (OSError, ValueError) as error:
            raise ValueError(f"{path}: not a normaliser statistics file ({error})") from error
        kind = str(state.pop("kind", ""))
        if kind not in NORMALISERS:
            raise ValueError(f"{path}: unknown normaliser kind {kind!r}")
        normaliser = NORMALISERS[kind].__new__(NORMALISERS[kind])
        normaliser.load_state(state)
        return normaliser


class GlobalNormaliser(Normaliser):
    kind = "global"

    def __init__(self) -> None:
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None

    def fit(self, train: SplitData) -> GlobalNormaliser:
        self.mean, self.std, _ = moments(train.features)
        return self

    def transform(self, data: SplitData) -> SplitData:
        if self.mean is None:
            raise RuntimeError("GlobalNormaliser is not fitted (fit it on the training split)")
        if data.is_frames:
            return data.with_features([_apply_frames(f, self.mean, self.std) for f in data.features])
        return data.with_features(_apply(data.features, self.mean, self.std))

    def state(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean, "std": self.std}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.mean, self.std = state["mean"], state["std"]


class SpeakerNormaliser(Normaliser):
    kind = "speaker"

    def __init__(self, min_utterances: int = 5) -> None:
        if min_utterances < 1:
            raise ValueError(f"min_utterances must be >= 1, got {min_utterances}")
        self.min_utterances = min_utterances
        self.fallback = GlobalNormaliser()
        #: speaker -> (mean, std, utterances) of the latest call that had enough of them
        self.speaker_stats: dict[str, tuple[np.ndarray, np.ndarray, int]] = {}

    def fit(self, train: SplitData) -> SpeakerNormaliser:
        self.fallback.fit(train)
        return self

    def transform(self, data: SplitData) -> SplitData:
        if self.fallback.mean is None:
            raise RuntimeError("SpeakerNormaliser is not fitted (fit it on the training split)")
        groups: dict[str, list[int]] = defaultdict(list)
        if data.speakers is not None:
            for i, speaker in enumerate(data.speakers):
                if not _is_unknown(speaker):
                    groups[str(speaker)].append(i)
        for speaker, rows in groups.items():
            if len(rows) >= self.min_utterances:
                mean, std, _ = moments(data.features, rows)
                self.speaker_stats[speaker] = (mean, std, len(rows))
        chosen: list[tuple[np.ndarray, np.ndarray]] = []
        for i in range(len(data)):
            speaker = None if data.speakers is None else data.speakers[i]
            stats = None if _is_unknown(speaker) else self.speaker_stats.get(str(speaker))
            chosen.append(stats[:2] if stats is not None else (self.fallback.mean, self.fallback.std))
        if data.is_frames:
            return data.with_features([_apply_frames(f, *chosen[i]) for i, f in enumerate(data.features)])
        means = np.stack([c[0] for c in chosen]) if chosen else np.zeros((0,) + data.features.shape[1:])
        stds = np.stack([c[1] for c in chosen]) if chosen else np.ones((0,) + data.features.shape[1:])
        return data.with_features(_apply(data.features, means, stds))

    def state(self) -> dict[str, np.ndarray]:
        speakers = sorted(self.speaker_stats)
        shape = self.fallback.mean.shape
        return {
            "min_utterances": np.array(self.min_utterances),
            "mean": self.fallback.mean,
            "std": self.fallback.std,
            "speakers": np.array(speakers, dtype=str),
            "speaker_mean": np.stack([self.speaker_stats[s][0] for s in speakers]) if speakers else np.zeros((0, *shape)),
            "speaker_std": np.stack([self.speaker_stats[s][1] for s in speakers]) if speakers else np.zeros((0, *shape)),
            "speaker_count": np.array([self.speaker_stats[s][2] for s in speakers], dtype=np.int64),
        }

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.min_utterances = int(state["min_utterances"])
        self.fallback = GlobalNormaliser()
        self.fallback.load_state(state)
        self.speaker_stats = {
            str(s): (state["speaker_mean"][i], state["speaker_std"][i], int(state["speaker_count"][i]))
            for i, s in enumerate(state["speakers"])
        }


class UtteranceNormaliser(Normaliser):
    kind = "utterance"

    def __init__(self, axis: Literal["frames", "features"] = "frames") -> None:
        if axis not in ("frames", "features"):
            raise ValueError(f"utterance normalisation axis must be 'frames' or 'features', got {axis!r}")
        self.axis = axis

    def transform(self, data: SplitData) -> SplitData:
        if not data.is_frames:
            if self.axis == "frames":
                raise ValueError("per-utterance standardisation over frames needs frame-level features; "
                                 "pooled features have no frames (use axis='features')")
            return data.with_features(self._standardise(data.features, axis=-1))
        axis = 1 if self.axis == "frames" else -1
        return data.with_features([self._standardise(f, axis=axis) for f in data.features])

    @staticmethod
    def _standardise(x: np.ndarray, axis: int) -> np.ndarray:
        x = x.astype(np.float64)
        mean = x.mean(axis=axis, keepdims=True)
        std = x.std(axis=axis, keepdims=True)
        return ((x - mean) / _safe_std(std)).astype(np.float32)

    def state(self) -> dict[str, np.ndarray]:
        return {"axis": np.array(self.axis)}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.axis = str(state["axis"])


NORMALISERS: dict[str, type[Normaliser]] = {
    "global": GlobalNormaliser, "speaker": SpeakerNormaliser, "utterance": UtteranceNormaliser,
}


def make_normaliser(kind: NormalisationKind, **options) -> Normaliser | None:
    """A fresh normaliser of ``kind`` ("none" gives None)."""
    if kind == "none":
        return None
    if kind not in NORMALISERS:
        raise ValueError(f"unknown normalisation {kind!r}; use none, {', '.join(NORMALISERS)}")
    return NORMALISERS[kind](**options)
