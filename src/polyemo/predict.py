"""Emotion prediction with a model bundle: audio in, labels, probabilities and dimensions out.

``polyemo.load(bundle)`` gives a :class:`Recogniser`; ``Recogniser.predict`` takes files,
arrays or lists of either. Inside, every recording becomes one or more *units* (the whole
clip, or its speech segments found by Silero VAD when it is long), units are encoded in
batches, normalised the way the model was trained, and run through the head. Segment
predictions are summarised per recording by the duration-weighted mean of probabilities.

Speaker normalisation at prediction time works on *groups* (``AudioItem.group``): all
units of a group with at least ``min_group_size`` units get that group's statistics; a
smaller group (a single short clip) falls back to the training statistics in the bundle.
Each prediction states which it got (``norm_source``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from polyemo.audio import SAMPLE_RATE, AudioError, load_audio
from polyemo.bundle import DIMENSION_OUTPUT, Bundle, BundleError, check_encoder_identity, read_bundle
from polyemo.bundle import NORMALISATION as NORMALISATION_FILE
from polyemo.segment import Segment, VadConfig, speech_segments

if TYPE_CHECKING:
    import torch

    from polyemo.encoders.base import Encoder

AudioInput = str | os.PathLike[str] | np.ndarray
OnError = Literal["raise", "record"]
_OWN_RECORDING = "\x00recording#"


def default_model_path() -> Path:
    """The model bundled with the package (``polyemo/data/default-model``)."""
    return Path(str(resources.files("polyemo") / "data" / "default-model"))


@dataclass
class SegmentPrediction:
    start: float
    end: float
    label: str
    probabilities: dict[str, float]
    dimensions: dict[str, float] = field(default_factory=dict)


@dataclass
class Prediction:
    """The result for one recording. ``error`` is set (and the rest empty) when it failed."""

    source: str
    label: str | None = None
    probabilities: dict[str, float] = field(default_factory=dict)
    duration: float | None = None
    arousal: float | None = None
    valence: float | None = None
    dominance: float | None = None
    segments: list[SegmentPrediction] | None = None
    group: str | None = None
    norm_source: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for dim in ("arousal", "valence", "dominance"):
            if data[dim] is None:
                del data[dim]
        return data

    def to_row(self, classes: Sequence[str]) -> dict[str, Any]:
        """A flat table row: ``prob_<class>`` columns, segments as a JSON string."""
        import json

        row: dict[str, Any] = {"path": self.source, "label": self.label}
        for cls in classes:
            row[f"prob_{cls}"] = self.probabilities.get(cls)
        for dim in ("arousal", "valence", "dominance"):
            row[dim] = getattr(self, dim)
        row["duration"] = self.duration
        row["n_segments"] = len(self.segments) if self.segments is not None else None
        row["segments"] = json.dumps([asdict(s) for s in self.segments]) if self.segments is not None else None
        row["group"] = self.group
        row["norm_source"] = self.norm_source
        row["error"] = self.error
        return row


@dataclass
class AudioItem:
    """One recording to predict: a file path, or a decoded 16 kHz mono ``wave``.

    ``group``: normalisation group (speaker, folder, recording); None -> the recording alone.
    ``segment``: True/False forces voice-activity segmentation; None decides by duration.
    """

    source: str
    wave: np.ndarray | None = None
    group: str | None = None
    segment: bool | None = None


@dataclass
class _Unit:
    item: int
    wave: np.ndarray
    segment: Segment | None


class Recogniser:
    """A loaded bundle: encoder, normalisation and head, ready to predict."""

    def __init__(self, bundle: Bundle, encoder: Encoder | None = None, *, vad: VadConfig | None = None,
                 batch_size: int = 8) -> None:
        import torch

        self.bundle = bundle
        spec = bundle.config.features
        if encoder is None:
            encoder = _load_encoder(bundle)
        check_encoder_identity(bundle, encoder.identity)
        self.encoder = encoder
        self.head = bundle.build_head()
        self.classes = list(bundle.labels.classes)
        self.dimensions = list(bundle.dimensions)
        self.vad = vad or VadConfig()
        self.batch_size = batch_size
        self.layers = spec.layers
        self._normaliser = _PredictionNormaliser(bundle)
        self._torch = torch

    # -- description -------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.bundle.name

    @property
    def encoder_name(self) -> str:
        return self.bundle.config.features.encoder

    @property
    def normalisation(self) -> str:
        return self.bundle.config.normalisation.mode

    def describe(self) -> dict[str, Any]:
        """Name, encoder, classes and the model card facts, for /v1/labels and logs."""
        config = self.bundle.config
        card = config.card
        return {
            "name": config.name,
            "encoder": config.features.encoder,
            "precision": config.features.precision,
            "head": config.head.config.get("name"),
            "normalisation": config.normalisation.mode,
            "classes": self.classes,
            "dimensions": self.dimensions,
            "languages": card.languages,
            "corpora": card.corpora,
            "protocol": card.protocol,
            "scores": card.scores,
            "created": config.created,
        }

    def __repr__(self) -> str:
        return f"Recogniser({self.name!r}, encoder={self.encoder_name!r}, classes={self.classes})"

    # -- prediction ----------------------------------------------------------------------------
    def predict(
        self,
        inputs: AudioInput | Sequence[AudioInput],
        sample_rate: int | None = None,
        speakers: str | Sequence[str | None] | None = None,
        *,
        segment: bool | None = None,
        on_error: OnError = "raise",
    ) -> list[Prediction]:
        """Predict files and/or arrays (arrays at ``sample_rate``, default 16 kHz).

        ``speakers`` names each input's speaker (one name for all, or one per input): with a
        speaker-normalised model, inputs of the same speaker share statistics. By default each
        recording is its own group, so a single short clip uses the training statistics.
        ``segment`` forces (True) or prevents (False) voice-activity segmentation; by default
        recordings longer than the bundle's ``segment_above_seconds`` are segmented.
        ``on_error="record"`` returns failed inputs as predictions with ``error`` set instead
        of raising :class:`~polyemo.audio.AudioError`.
        """
        single = isinstance(inputs, (str, os.PathLike, np.ndarray))
        sources: list[AudioInput] = [inputs] if single else list(inputs)  # type: ignore[list-item]
        if isinstance(speakers, str) or speakers is None:
            groups: list[str | None] = [speakers] * len(sources)
        else:
            groups = list(speakers)
            if len(groups) != len(sources):
                raise ValueError(f"{len(groups)} speakers for {len(sources)} inputs")
        items = []
        for index, (source, group) in enumerate(zip(sources, groups)):
            if isinstance(source, np.ndarray):
                name = f"<array {index}>"
                wave = load_audio(source, sample_rate, check=False)
            else:
                name, wave = os.fspath(source), None
            items.append(AudioItem(name, wave, f"speaker:{group}" if group is not None else None, segment))
        return self.run(items, on_error=on_error)

    def run(self, items: Sequence[AudioItem], *, on_error: OnError = "record",
            progress: Callable[[int], None] | None = None) -> list[Prediction]:
        """Predict prepared items (the batch interface used by the CLI and the server).

        ``progress(n)`` is called as recordings finish loading and as units are encoded.
        """
        predictions = [Prediction(source=item.source, group=item.group) for item in items]
        units: list[_Unit] = []
        for index, item in enumerate(items):
            try:
                wave = item.wave if item.wave is not None else load_audio(item.source)
                if item.wave is not None:
                    from polyemo.audio import check_usable

                    check_usable(wave, item.source)
                predictions[index].duration = round(wave.size / SAMPLE_RATE, 3)
                units += self._units(index, item, wave)
            except AudioError as exc:
                if on_error == "raise":
                    raise
                predictions[index].error = str(exc)
        if units:
            self._predict_units(units, items, predictions, on_error)
        if progress is not None:
            progress(len(items))
        return predictions

    def _units(self, index: int, item: AudioItem, wave: np.ndarray) -> list[_Unit]:
        duration = wave.size / SAMPLE_RATE
        wanted = item.segment if item.segment is not None else duration > self.bundle.config.segment_above_seconds
        if not wanted:
            return [_Unit(index, wave, None)]
        segments = speech_segments(wave, self.vad)
        if not segments:
            raise AudioError(item.source, "no speech found by voice activity detection")
        return [_Unit(index, segment.cut(wave), segment) for segment in segments]

    def _predict_units(self, units: list[_Unit], items: Sequence[AudioItem], predictions: list[Prediction],
                       on_error: OnError) -> None:
        features, failed = self._encode(units, items, on_error)
        for index, message in failed.items():
            predictions[index].error = message
        keep = [i for i, unit in enumerate(units) if unit.item not in failed]
        if not keep:
            return
        units = [units[i] for i in keep]
        features = [features[i] for i in keep]
        # Without a group a recording is its own group (its segments share statistics).
        groups = [items[u.item].group or f"{_OWN_RECORDING}{u.item}" for u in units]
        features, sources = self._normaliser(features, groups)
        probabilities, dimensions = self._forward(features)
        self._assemble(units, probabilities, dimensions, sources, predictions)

    def _encode(self, units: list[_Unit], items: Sequence[AudioItem], on_error: OnError
                ) -> tuple[list[np.ndarray | None], dict[int, str]]:
        """Features per unit ((L, D) pooled or (L, T, D) frames), batched by similar length.

        A batch that fails is retried one unit at a time so a single bad recording only
        fails itself.
        """
        order = sorted(range(len(units)), key=lambda i: units[i].wave.size)
        out: list[np.ndarray | None] = [None] * len(units)
        failed: dict[int, str] = {}
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            try:
                for i, feature in zip(batch, self._features([units[i].wave for i in batch])):
                    out[i] = feature
            except Exception:
                if on_error == "raise" and len(batch) == 1:
                    raise
                for i in batch:
                    try:
                        out[i] = self._features([units[i].wave])[0]
                    except Exception as exc:  # noqa: BLE001 - recorded per recording
                        if on_error == "raise":
                            raise
                        failed[units[i].item] = f"{items[units[i].item].source}: encoder failed ({type(exc).__name__}: {exc})"
        return out, failed

    def _features(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        if self.bundle.config.features.kind == "pooled":
            pooled = np.asarray(self.encoder.pooled(waves), dtype=np.float32)
            if self.layers is not None:
                pooled = pooled[:, self.layers]
            return list(pooled)
        frames = self.encoder.frames(waves)
        return [np.asarray(f.layers if self.layers is None else f.layers[self.layers], dtype=np.float32) for f in frames]

    def _forward(self, features: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        torch = self._torch
        probabilities, dimensions = [], []
        with torch.inference_mode():
            for start in range(0, len(features), max(self.batch_size, 32)):
                chunk = features[start:start + max(self.batch_size, 32)]
                x, lengths = _stack(chunk, torch)
                outputs = self.head(x, lengths)
                probabilities.append(torch.softmax(outputs["emotion"].float(), dim=-1).numpy())
                if self.dimensions:
                    dimensions.append(outputs[DIMENSION_OUTPUT].float().numpy())
        return np.concatenate(probabilities), (np.concatenate(dimensions) if dimensions else None)

    def _assemble(self, units: list[_Unit], probabilities: np.ndarray, dimensions: np.ndarray | None,
                  sources: list[str], predictions: list[Prediction]) -> None:
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
                        label=self.classes[int(np.argmax(probabilities[i]))],
                        probabilities=self._prob_dict(probabilities[i]),
                        dimensions=self._dim_dict(dimensions[i]) if dimensions is not None else {},
                    )
                    for i in rows
                ]
            else:
                probs = probabilities[rows[0]]
                dims = dimensions[rows[0]] if dimensions is not None else None
            prediction.label = self.classes[int(np.argmax(probs))]
            prediction.probabilities = self._prob_dict(probs)
            if dims is not None:
                for name, value in self._dim_dict(dims).items():
                    setattr(prediction, name, value)
            prediction.norm_source = sources[rows[0]]

    def _prob_dict(self, probs: np.ndarray) -> dict[str, float]:
        return {cls: round(float(p), 6) for cls, p in zip(self.classes, probs)}

    def _dim_dict(self, values: np.ndarray) -> dict[str, float]:
        return {name: round(float(v), 6) for name, v in zip(self.dimensions, values)}


def _stack(features: list[np.ndarray], torch: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Pooled (L, D) -> (B, L, D); frames (L, T, D) -> zero-padded (B, L, T_max, D) with lengths."""
    if features[0].ndim == 2:
        return torch.from_numpy(np.stack(features)), None
    lengths = [f.shape[1] for f in features]
    layers, _, dim = features[0].shape
    batch = np.zeros((len(features), layers, max(lengths), dim), dtype=np.float32)
    for i, f in enumerate(features):
        batch[i, :, : f.shape[1]] = f
    return torch.from_numpy(batch), torch.tensor(lengths)


class _PredictionNormaliser:
    """The training normaliser applied at prediction time, statelessly, per group.

    A speaker normaliser is rebuilt for every call from the training statistics only, so
    predictions never depend on what was predicted before (or on other server requests).
    """

    def __init__(self, bundle: Bundle) -> None:
        from polyemo.bundle import normaliser_from_bundle

        self.spec = bundle.config.normalisation
        self.stats = bundle.normalisation_stats
        try:
            self.normaliser = normaliser_from_bundle(self.spec, self.stats)
        except (KeyError, ValueError, TypeError) as exc:
            raise BundleError(bundle.path, NORMALISATION_FILE,
                              f"{self.spec.mode} normalisation cannot be rebuilt ({type(exc).__name__}: {exc}); "
                              f"statistics found: {sorted(self.stats)}") from exc

    def __call__(self, features: list[np.ndarray], groups: list[str]) -> tuple[list[np.ndarray], list[str]]:
        from polyemo.bundle import normaliser_from_bundle
        from polyemo.train.data import SplitData

        mode = self.spec.mode
        if self.normaliser is None:
            return features, ["none"] * len(features)
        pooled = features[0].ndim == 2
        data = SplitData(np.stack(features) if pooled else list(features), speakers=np.array(groups, dtype=object))
        if mode != "speaker":
            out = self.normaliser.transform(data).features
            source = "utterance" if mode == "utterance" else "training statistics"
            return list(out), [source] * len(features)
        fresh = normaliser_from_bundle(self.spec, self.stats)
        out = fresh.transform(data).features
        counts: dict[str, int] = {}
        for group in groups:
            counts[group] = counts.get(group, 0) + 1
        minimum = fresh.min_utterances
        names = {group: "recording" if group.startswith(_OWN_RECORDING) else group for group in counts}
        sources = [
            f"{names[group]} ({counts[group]} units)" if counts[group] >= minimum
            else f"training statistics ({names[group]}: {counts[group]} < {minimum} units)"
            for group in groups
        ]
        return list(out), sources


def _load_encoder(bundle: Bundle) -> Encoder:
    spec = bundle.config.features
    try:
        from polyemo.encoders import get_encoder
    except ImportError as exc:
        raise BundleError(bundle.path, "config.json", f"cannot import the encoders to load {spec.encoder!r}: {exc}") from exc
    try:
        return get_encoder(spec.encoder, precision=spec.precision)
    except KeyError as exc:
        raise BundleError(bundle.path, "config.json", f"unknown encoder {spec.encoder!r}: {exc.args[0] if exc.args else exc}") from exc
    except Exception as exc:  # missing weights, bad precision...
        raise BundleError(bundle.path, "config.json", f"cannot load encoder {spec.encoder!r} ({type(exc).__name__}: {exc})") from exc


def load_model(path: str | os.PathLike[str] | None = None, *, encoder: Encoder | None = None,
               batch_size: int = 8) -> Recogniser:
    """Load a bundle folder (default: the packaged default model) as a :class:`Recogniser`.

    Raises :class:`~polyemo.bundle.BundleError` for a missing or modified file, or when the
    installed encoder differs from the one the head was trained on.
    """
    if path is None:
        path = default_model_path()
        if not (path / "manifest.json").exists():
            raise BundleError(path, None, "no default model is installed in this polyemo; pass a bundle folder (--model)")
    return Recogniser(read_bundle(path), encoder, batch_size=batch_size)


def duration_weighted_mean(values: np.ndarray, durations: np.ndarray) -> np.ndarray:
    """Duration-weighted mean over segments of (segments, K) values: the utterance-level summary."""
    weights = np.asarray(durations, dtype=np.float64)
    total = weights.sum()
    if not math.isfinite(total) or total <= 0 or (weights < 0).any():
        raise ValueError(f"segment durations must be positive, got {weights}")
    return (np.asarray(values, dtype=np.float64) * (weights / total)[:, None]).sum(0)
