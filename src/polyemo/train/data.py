"""The arrays a head trains on, and the sealed test split.

:class:`SplitData` holds one split's features (pooled ``(N, L, D)`` or a list of per-utterance
frame arrays ``(L, T, D)``) with labels, class masks, speakers and auxiliary targets.

:class:`SealedSplit` wraps the test split so it can be read exactly once, and only with the
:class:`FitReceipt` that a finished ``fit`` hands out: code that trains or selects models
never receives the sealed object's data (a guard against accidents, not against malice).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # only a type here; prediction builds SplitData without pandas
    import pandas as pd


class DataError(ValueError):
    """The arrays given to a head are unusable: shapes, lengths, labels or values disagree.

    Not :class:`polyemo.splits.SplitError` (a protocol cannot split a manifest): that is
    the splits stage refusing a manifest, this is the training stage refusing arrays."""


#: deprecated alias (clashed with :class:`polyemo.splits.SplitError`); catch DataError
SplitError = DataError


def _column(values: Any, n: int, name: str, dtype: Any) -> np.ndarray | None:
    if values is None:
        return None
    arr = np.asarray(values, dtype=dtype)
    if len(arr) != n:
        raise DataError(f"{name} has {len(arr)} rows but the features have {n}")
    return arr


@dataclass
class SplitData:
    """One split's features and targets.

    ``features``: pooled ``(N, L, D)`` (``(N, D)`` is read as one layer), or a sequence of
    ``N`` frame arrays ``(L, T_i, D)`` (``(T_i, D)`` is read as one layer), each T_i >= 1.
    ``labels``: (N,) class indices, -1 where a row has no usable label (None: unlabelled).
    ``masks``: (N, C) bool, the classes each row's corpus can produce (training only).
    ``speakers``: (N,) speaker ids (for speaker normalisation), None or "" when unknown.
    ``gender``: (N,) 0 female / 1 male / -1 unknown. ``avd``: (N, 3) floats, NaN unknown.
    """

    features: np.ndarray | Sequence[np.ndarray]
    labels: np.ndarray | None = None
    masks: np.ndarray | None = None
    speakers: np.ndarray | None = None
    utt_ids: np.ndarray | None = None
    gender: np.ndarray | None = None
    avd: np.ndarray | None = None

    def __post_init__(self) -> None:
        if isinstance(self.features, np.ndarray) and self.features.dtype != object:
            if self.features.ndim == 2:
                self.features = self.features[:, None, :]
            if self.features.ndim != 3:
                raise DataError(f"pooled features must be (N, layers, dim), got shape {self.features.shape}")
        else:
            frames = list(self.features)
            shapes = set()
            converted = False
            for i, item in enumerate(frames):
                if not isinstance(item, np.ndarray) or item.ndim == 2:
                    item = np.asarray(item)
                    item = item[None] if item.ndim == 2 else item
                    frames[i], converted = item, True
                if item.ndim != 3 or item.shape[1] < 1:
                    raise DataError(f"frame features of row {i} must be (layers, frames>=1, dim), got {item.shape}")
                shapes.add((item.shape[0], item.shape[2]))
            if len(shapes) > 1:
                raise DataError(f"frame features disagree on (layers, dim): {sorted(shapes)}")
            if converted or not isinstance(self.features, Sequence):
                self.features = frames  # else keep the caller's sequence (it may load lazily)
        n = len(self.features)
        self.labels = _column(self.labels, n, "labels", np.int64)
        self.masks = _column(self.masks, n, "masks", bool)
        if self.masks is not None and (self.masks.ndim != 2):
            raise DataError(f"masks must be (N, classes), got shape {self.masks.shape}")
        self.speakers = _column(self.speakers, n, "speakers", object)
        self.utt_ids = _column(self.utt_ids, n, "utt_ids", object)
        self.gender = _column(self.gender, n, "gender", np.int64)
        self.avd = _column(self.avd, n, "avd", np.float64)

    def __len__(self) -> int:
        return len(self.features)

    @property
    def is_frames(self) -> bool:
        return not isinstance(self.features, np.ndarray)

    @property
    def num_layers(self) -> int:
        if self.is_frames:
            return self.features[0].shape[0] if len(self) else 0
        return self.features.shape[1]

    @property
    def feature_dim(self) -> int:
        if self.is_frames:
            return self.features[0].shape[2] if len(self) else 0
        return self.features.shape[2]

    @property
    def has_labels(self) -> bool:
        return self.labels is not None and bool((self.labels >= 0).any())

    def nonfinite_rows(self) -> np.ndarray:
        """Indices of rows whose features hold NaN or inf (e.g. failed extractions)."""
        if self.is_frames:
            return np.array([i for i, f in enumerate(self.features) if not np.isfinite(f).all()], dtype=np.int64)
        return np.flatnonzero(~np.isfinite(self.features.reshape(len(self), -1)).all(axis=1))

    def with_features(self, features: np.ndarray | Sequence[np.ndarray]) -> SplitData:
        return replace(self, features=features)

    def subset(self, index: np.ndarray | Sequence[int]) -> SplitData:
        index = np.asarray(index, dtype=np.int64)
        pick = (lambda a: None if a is None else a[index])
        features = [self.features[i] for i in index] if self.is_frames else self.features[index]
        return SplitData(features, pick(self.labels), pick(self.masks), pick(self.speakers),
                         pick(self.utt_ids), pick(self.gender), pick(self.avd))

    @classmethod
    def concat(cls, parts: Sequence[SplitData]) -> SplitData:
        """The rows of ``parts`` one after another (e.g. training + validation for a refit)."""
        parts = [p for p in parts if len(p)]
        if not parts:
            raise DataError("nothing to concatenate")
        if len({p.is_frames for p in parts}) > 1:
            raise DataError("cannot concatenate pooled and frame features")

        def join(name: str):
            values = [getattr(p, name) for p in parts]
            if all(v is None for v in values):
                return None
            template = next(v for v in values if v is not None)
            # A part without the column gets its "unknown" value (label -1, gender -1, NaN, all classes).
            fill = {"labels": -1, "gender": -1, "avd": np.nan, "masks": True, "speakers": None, "utt_ids": None}[name]
            return np.concatenate([v if v is not None else np.full((len(p), *template.shape[1:]), fill,
                                                                    dtype=template.dtype)
                                   for v, p in zip(values, parts)])

        if parts[0].is_frames:
            features = [f for p in parts for f in p.features]
        else:
            features = np.concatenate([p.features for p in parts])
        return cls(features, join("labels"), join("masks"), join("speakers"), join("utt_ids"),
                   join("gender"), join("avd"))

    def select_layer(self, layer: int) -> SplitData:
        """Keep one layer (negative counts from the top) as a one-layer split."""
        if not -self.num_layers <= layer < self.num_layers:
            raise DataError(f"layer {layer} out of range for features with {self.num_layers} layers")
        if self.is_frames:
            return self.with_features([f[layer:layer + 1 if layer != -1 else None] for f in self.features])
        return self.with_features(self.features[:, [layer]])

    @classmethod
    def from_manifest(cls, manifest: pd.DataFrame, features: np.ndarray | Sequence[np.ndarray],
                      labels: Any, with_masks: bool = True) -> SplitData:
        """Targets from manifest rows (in the order of ``features``) under a label set.

        ``labels``: a :class:`polyemo.labels.LabelSet` or a named set ("big4", ...).
        """
        from polyemo.labels import encode, gender_codes, label_set, row_masks

        label_set_ = label_set(labels)
        label_values = manifest["label"].astype(object).where(manifest["label"].notna(), None)
        avd = None
        if {"arousal", "valence", "dominance"} <= set(manifest.columns):
            avd = manifest[["arousal", "valence", "dominance"]].to_numpy(dtype=np.float64)
        speakers = manifest["speaker"].astype(object).where(manifest["speaker"].notna(), None)
        return cls(
            features=features,
            labels=encode(label_set_, label_values.tolist()),
            masks=row_masks(manifest, label_set_) if with_masks else None,
            speakers=speakers.to_numpy(),
            utt_ids=manifest["utt_id"].astype(str).to_numpy(),
            gender=gender_codes(manifest["gender"]),
            avd=avd,
        )


class SealedSplitError(RuntimeError):
    pass


@dataclass(frozen=True)
class FitReceipt:
    """Handed out by a finished ``fit``; the only key that opens a :class:`SealedSplit`."""

    finished_at: float
    best_epoch: int | None


class SealedSplit:
    """A test split that can be opened once, after training, with a :class:`FitReceipt`.

    ``access_log`` records every attempt (time, outcome), so a run can show when its test
    data was read.
    """

    def __init__(self, data: SplitData, name: str = "test") -> None:
        if not isinstance(data, SplitData):
            raise TypeError(f"SealedSplit wraps a SplitData, got {type(data).__name__}")
        self.__data = data  # name-mangled: not an attribute anyone reaches by accident
        self.name = name
        self.access_log: list[tuple[float, str]] = []
        self._opened = False

    def __repr__(self) -> str:
        return f"SealedSplit(name={self.name!r}, opened={self._opened})"

    @property
    def opened(self) -> bool:
        return self._opened

    def open(self, receipt: FitReceipt) -> SplitData:
        now = time.time()
        if not isinstance(receipt, FitReceipt):
            self.access_log.append((now, "refused: no fit receipt"))
            raise SealedSplitError(f"the {self.name} split is sealed until training has finished "
                                   f"(open it with the FitReceipt that fit() returns)")
        if self._opened:
            self.access_log.append((now, "refused: already opened"))
            raise SealedSplitError(f"the {self.name} split was already opened; it is read exactly once")
        self._opened = True
        self.access_log.append((now, "opened"))
        return self.__data
