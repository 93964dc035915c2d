"""Emotion prediction with a model bundle: audio in, labels, probabilities and dimensions out.

``polyemo.load(bundle)`` gives a :class:`Recogniser`; ``Recogniser.predict`` takes files,
arrays or lists of either. Inside, every recording becomes one or more *units* (the whole
clip, or its speech segments found by Silero VAD when it is long), units are encoded in
batches, normalised the way the model was trained, and run through the head. Segment
predictions are summarised per recording by the duration-weighted mean of probabilities.

Speaker normalisation at prediction time works on *groups* (``AudioItem.group``: a speaker,
a folder; by default the recording itself): all units of a group with at least the
normaliser's ``min_utterances`` units get that group's statistics; a smaller group (a single
short clip) falls back to the training statistics in the bundle. Each prediction states
which it got (``norm_source``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
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
        _check_shapes(bundle, encoder)
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

        ``progress(n)`` is called with the number of recordings finished (encoded or failed)
        as the work goes on.
        """
        from polyemo.audio import check_usable

        advance = progress or (lambda n: None)
        predictions = [Prediction(source=item.source, group=item.group) for item in items]
        units: list[_Unit] = []
        for index, item in enumerate(items):
            try:
                wave = item.wave if item.wave is not None else load_audio(item.source)
                if item.wave is not None:
                    check_usable(wave, item.source)
                predictions[index].duration = round(wave.size / SAMPLE_RATE, 3)
                units += self._units(index, item, wave)
            except AudioError as exc:
                if on_error == "raise":
                    raise
                predictions[index].error = str(exc)
                advance(1)
        if units:
            self._predict_units(units, items, predictions, on_error, advance)
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
                       on_error: OnError, advance: Callable[[int], None]) -> None:
        features, failed = self._encode(units, items, on_error, advance)
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

    def _encode(self, units: list[_Unit], items: Sequence[AudioItem], on_error: OnError,
                advance: Callable[[int], None]) -> tuple[list[np.ndarray | None], dict[int, str]]:
        """Features per unit ((L, D) pooled or (L, T, D) frames), batched by similar length.

        A batch that fails is retried one unit at a time so a single bad recording only
        fails itself.
        """
        order = sorted(range(len(units)), key=lambda i: units[i].wave.size)
        out: list[np.ndarray | None] = [None] * len(units)
        failed: dict[int, str] = {}
        remaining: dict[int, int] = {}
        for unit in units:
            remaining[unit.item] = remaining.get(unit.item, 0) + 1
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
            for i in batch:
                if out[i] is not None and not np.isfinite(out[i]).all():
                    message = f"{items[units[i].item].source}: the encoder produced NaN/inf features"
                    if on_error == "raise":
                        raise AudioError(items[units[i].item].source, "the encoder produced NaN/inf features")
                    failed[units[i].item] = message
            finished = 0
            for i in batch:
                remaining[units[i].item] -= 1
                finished += remaining[units[i].item] == 0
            if finished:
                advance(finished)
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
        if mode not in ("test-speaker", "enrolled-speaker"):
            out = self.normaliser.transform(data).features
            source = "utterance" if mode == "utterance" else "training statistics"
            return list(out), [source] * len(features)
        fresh = normaliser_from_bundle(self.spec, self.stats)
        out = fresh.transform(data).features
        counts: dict[str, int] = {}
        for group in groups:
            counts[group] = counts.get(group, 0) + 1
        names = {group: "recording" if group.startswith(_OWN_RECORDING) else group for group in counts}
        if mode == "enrolled-speaker":  # statistics of min(enrol, n - 1) units of each group
            used = {group: min(fresh.enrol, counts[group] - 1) for group in counts}
            sources = [f"{names[group]} ({used[group]} enrolment units of {counts[group]})" if used[group] > 0
                       else f"training statistics ({names[group]}: 1 unit, none to enrol)" for group in groups]
            return list(out), sources
        minimum = fresh.min_utterances
        sources = [
            f"{names[group]} ({counts[group]} units)" if counts[group] >= minimum
            else f"training statistics ({names[group]}: {counts[group]} < {minimum} units)"
            for group in groups
        ]
        return list(out), sources


def _check_shapes(bundle: Bundle, encoder: Encoder) -> None:
    spec = bundle.config.features
    layers = getattr(encoder, "num_layers", None)
    if spec.layers is not None and layers is not None and any(not -layers <= i < layers for i in spec.layers):
        raise BundleError(bundle.path, "config.json", f"layers {spec.layers} do not exist in {spec.encoder} ({layers} layers)")
    dim = getattr(encoder, "pooled_dim" if spec.kind == "pooled" else "frame_dim", None)
    if dim is not None and dim != spec.feature_dim:
        raise BundleError(bundle.path, "config.json",
                          f"the head reads {spec.kind} features of size {spec.feature_dim}; {spec.encoder} gives {dim}")


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


# -- files, folders and lists -------------------------------------------------------------------

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".caf", ".w64")
SpeakerNorm = Literal["per-recording", "per-folder", "column"]
LIST_SUFFIXES = (".csv", ".tsv", ".txt")


@dataclass
class InputFile:
    path: str
    group: str | None = None


def collect_inputs(source: str | os.PathLike[str], speaker_norm: SpeakerNorm | None = None
                   ) -> tuple[list[InputFile], SpeakerNorm]:
    """The recordings named by ``source`` and their normalisation groups.

    ``source``: an audio file, a folder (searched recursively for audio files), or a list
    (``.csv``/``.tsv`` with a ``path`` column and optionally ``speaker``; ``.txt`` one path a
    line; relative paths are relative to the list). ``speaker_norm``: ``per-recording`` (each
    file alone), ``per-folder`` (files of a folder form a group), ``column`` (the list's
    ``speaker`` column); default ``column`` for lists with a speaker column, else per-recording.
    """
    source = Path(source)
    speakers: list[str | None] | None = None
    if source.is_dir():
        paths = sorted(str(p) for p in source.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
        if not paths:
            raise FileNotFoundError(f"{source}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) in this folder")
    elif source.suffix.lower() in LIST_SUFFIXES:
        paths, speakers = _read_list(source)
    elif source.exists():
        paths = [str(source)]
    else:
        raise FileNotFoundError(f"{source}: no such file or folder")
    if speaker_norm is None:
        speaker_norm = "column" if speakers is not None else "per-recording"
    if speaker_norm == "column":
        if speakers is None:
            raise ValueError(f"{source}: --speaker-norm column needs a list (.csv/.tsv) with a 'speaker' column")
        groups = [f"speaker:{s}" if s is not None else None for s in speakers]
    elif speaker_norm == "per-folder":
        groups = [f"folder:{Path(p).parent}" for p in paths]
    elif speaker_norm == "per-recording":
        groups = [None] * len(paths)
    else:
        raise ValueError(f"unknown speaker normalisation {speaker_norm!r}; use per-recording, per-folder or column")
    return [InputFile(p, g) for p, g in zip(paths, groups)], speaker_norm


def _read_list(source: Path) -> tuple[list[str], list[str | None] | None]:
    import pandas as pd

    if source.suffix.lower() == ".txt":
        lines = [line.strip() for line in source.read_text(encoding="utf-8").splitlines()]
        names = [line for line in lines if line and not line.startswith("#")]
        return [str(_resolve(source, n)) for n in names], None
    try:
        table = pd.read_csv(source, sep="\t" if source.suffix.lower() == ".tsv" else ",", dtype=str,
                            keep_default_na=False)
    except Exception as exc:  # pandas' parser errors are varied
        raise ValueError(f"{source}: cannot read the list ({exc})") from exc
    columns = {c.strip().lower(): c for c in table.columns}
    if "path" not in columns:
        raise ValueError(f"{source}: the list needs a 'path' column; found {list(table.columns)}")
    paths = [str(_resolve(source, p)) for p in table[columns["path"]]]
    speakers = None
    if "speaker" in columns:
        speakers = [s.strip() or None for s in table[columns["speaker"]]]
    return paths, speakers


def _resolve(listing: Path, name: str) -> Path:
    path = Path(name).expanduser()
    return path if path.is_absolute() else listing.parent / path


def partial_path(output: Path) -> Path:
    """Where rows are appended while a run is going (merged into ``output`` at the end)."""
    return output.with_name(output.name + ".partial.jsonl")


def prediction_record(prediction: Prediction) -> dict[str, Any]:
    """A JSON-lines record: the prediction with ``path`` first."""
    data = prediction.to_dict()
    return {"path": data.pop("source"), **data}


def read_output(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows of an earlier output (.jsonl or .csv); a torn last line (a killed run) is skipped."""
    import json

    path = Path(path)
    if not path.exists():
        return []
    if path.suffix.lower() == ".csv":
        import pandas as pd

        try:
            table = pd.read_csv(path, dtype={"path": str, "error": str}, keep_default_na=False, on_bad_lines="skip")
        except (pd.errors.EmptyDataError, pd.errors.ParserError):
            return []
        return [{k: (None if v == "" else v) for k, v in row.items()} for row in table.to_dict("records")]
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "path" in row:
            rows.append(row)
    return rows


def _csv_row(record: dict[str, Any], classes: Sequence[str]) -> dict[str, Any]:
    import json

    row: dict[str, Any] = {"path": record.get("path"), "label": record.get("label")}
    probabilities = record.get("probabilities") or {}
    if isinstance(probabilities, str):  # already a CSV row
        return record
    for cls in classes:
        row[f"prob_{cls}"] = probabilities.get(cls, record.get(f"prob_{cls}"))
    for dim in ("arousal", "valence", "dominance"):
        row[dim] = record.get(dim)
    row["duration"] = record.get("duration")
    segments = record.get("segments")
    if isinstance(segments, list):
        row["n_segments"] = len(segments)
        row["segments"] = json.dumps(segments)
    else:
        row["n_segments"] = record.get("n_segments")
        row["segments"] = segments
    row["group"] = record.get("group")
    row["norm_source"] = record.get("norm_source")
    row["error"] = record.get("error")
    return row


def write_output(path: str | os.PathLike[str], records: Sequence[dict[str, Any]], classes: Sequence[str]) -> None:
    """Write prediction records atomically: ``.jsonl`` as they are, ``.csv`` flat (prob_<class> columns)."""
    import json

    import pandas as pd

    from polyemo.io import atomic_path, write_text

    path = Path(path)
    if path.suffix.lower() == ".csv":
        table = pd.DataFrame([_csv_row(r, classes) for r in records])
        with atomic_path(path) as tmp:
            table.to_csv(tmp, index=False)
    elif path.suffix.lower() in (".jsonl", ".ndjson"):
        write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    else:
        raise ValueError(f"{path}: unsupported output format (use .jsonl or .csv)")


@dataclass
class FileRunSummary:
    """What :func:`predict_files` did."""

    inputs: int
    skipped: int
    predicted: int
    failed: int
    speaker_norm: str
    output: Path | None
    records: list[dict[str, Any]]


def predict_files(
    recogniser: Recogniser,
    source: str | os.PathLike[str] | Sequence[InputFile],
    output: str | os.PathLike[str] | None = None,
    *,
    speaker_norm: SpeakerNorm | None = None,
    segment: bool | None = None,
    resume: bool = True,
    files_per_call: int = 32,
    show_progress: bool = True,
    on_record: Callable[[dict[str, Any]], None] | None = None,
) -> FileRunSummary:
    """Predict every recording of a file, folder or list; one output record per input.

    A recording that cannot be used gets a record with ``error`` set and the run goes on.
    With ``output`` (.jsonl or .csv) records are appended to ``<output>.partial.jsonl`` as
    they finish, and merged into ``output`` atomically at the end; a rerun (``resume``) skips
    inputs that already have a successful record in either. A normalisation group is only
    skipped when all its recordings are done, since its statistics come from all of them.
    """
    if isinstance(source, (str, os.PathLike)):
        inputs, speaker_norm = collect_inputs(source, speaker_norm)
    else:
        inputs, speaker_norm = list(source), speaker_norm or "per-recording"
    output = Path(output) if output is not None else None
    if output is not None and output.suffix.lower() not in (".jsonl", ".ndjson", ".csv"):
        raise ValueError(f"{output}: unsupported output format (use .jsonl or .csv)")
    previous: dict[str, dict[str, Any]] = {}
    if output is not None and resume:
        for row in read_output(output) + read_output(partial_path(output)):
            previous[str(row["path"])] = row
    elif output is not None:
        partial_path(output).unlink(missing_ok=True)
    done = {p for p, row in previous.items() if not row.get("error")}

    # Work units: a whole group, or chunks of ungrouped recordings.
    grouped: dict[str, list[InputFile]] = {}
    loose: list[InputFile] = []
    for item in inputs:
        (grouped.setdefault(item.group, []) if item.group is not None else loose).append(item)
    calls = [files for files in grouped.values() if not all(f.path in done for f in files)]
    todo_loose = [f for f in loose if f.path not in done]
    calls += [todo_loose[i:i + files_per_call] for i in range(0, len(todo_loose), files_per_call)]
    pending = sum(len(c) for c in calls)
    skipped = len(inputs) - pending

    fresh: dict[str, dict[str, Any]] = {}
    failed = 0
    partial = open(partial_path(output), "a", encoding="utf-8") if output is not None else None  # noqa: SIM115
    try:
        with _progress(show_progress, pending, skipped) as advance:
            for files in calls:
                items = [AudioItem(f.path, group=f.group, segment=segment) for f in files]
                for prediction in recogniser.run(items, on_error="record", progress=advance):
                    record = prediction_record(prediction)
                    fresh[record["path"]] = record
                    failed += prediction.error is not None
                    if partial is not None:
                        import json

                        partial.write(json.dumps(record, ensure_ascii=False) + "\n")
                    if on_record is not None:
                        on_record(record)
                if partial is not None:
                    partial.flush()
                    os.fsync(partial.fileno())
    finally:
        if partial is not None:
            partial.close()

    ordered = []
    seen = set()
    for item in inputs:
        record = fresh.get(item.path) or previous.get(item.path)
        if record is not None and item.path not in seen:
            ordered.append(record)
            seen.add(item.path)
    # Rows of earlier runs for recordings not in this input stay (finished work is never lost).
    ordered += [row for path, row in previous.items() if path not in seen]
    if output is not None:
        write_output(output, ordered, recogniser.classes)
        partial_path(output).unlink(missing_ok=True)
    return FileRunSummary(len(inputs), skipped, len(fresh) - failed, failed, speaker_norm, output, ordered)


@contextmanager
def _progress(enabled: bool, total: int, skipped: int) -> Iterator[Callable[[int], None]]:
    """A rich progress bar over recordings on stderr (stdout may carry the results); yields ``advance(n)``."""
    if not enabled:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    label = f"predicting ({skipped} done before)" if skipped else "predicting"
    with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True)) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


# -- timeline plot ----------------------------------------------------------------------------

#: One colour per canonical emotion, shared with the web page (polyemo/web/app.js).
EMOTION_COLOURS = {
    "anger": "#e03131", "boredom": "#a47148", "calm": "#38d9a9", "contempt": "#9c36b5",
    "disgust": "#5c940d", "fear": "#7048e8", "happiness": "#f59f00", "neutral": "#868e96",
    "sadness": "#1c7ed6", "surprise": "#f783ac", "other": "#495057",
}


def plot_timeline(prediction: Prediction | dict[str, Any], path: str | os.PathLike[str] | None = None,
                  classes: Sequence[str] | None = None, title: str | None = None):
    """Class probabilities over time of a segmented prediction (stacked bars per segment).

    Saved to ``path`` (png/pdf/svg, atomically) when given; returns the matplotlib Figure.
    """
    from matplotlib.figure import Figure  # no pyplot: no display, no global state

    data = prediction_record(prediction) if isinstance(prediction, Prediction) else dict(prediction)
    segments = data.get("segments")
    if not segments:
        raise ValueError(f"{data.get('path')}: no segments to plot (predict with segmentation)")
    segments = [s if isinstance(s, dict) else asdict(s) for s in segments]
    classes = list(classes or data.get("probabilities") or segments[0]["probabilities"])
    duration = float(data.get("duration") or segments[-1]["end"])
    width = max(6.0, min(16.0, duration / 4))
    fig = Figure(figsize=(width, 3.2))
    ax = fig.add_subplot(1, 1, 1)
    seconds_per_char = 0.065 * duration / (width - 2.2)  # 7 pt text over the axes' width
    for seg in segments:
        bottom = 0.0
        for cls in classes:
            value = float(seg["probabilities"].get(cls, 0.0))
            ax.bar(seg["start"], value, width=seg["end"] - seg["start"], bottom=bottom, align="edge",
                   color=EMOTION_COLOURS.get(cls, "#495057"), edgecolor="white", linewidth=0.3)
            bottom += value
        narrow = seg["end"] - seg["start"] < len(seg["label"]) * seconds_per_char
        ax.text((seg["start"] + seg["end"]) / 2, 1.02, seg["label"], ha="center", va="bottom", fontsize=7,
                rotation=90 if narrow else 0)
    handles = [ax.bar(0, 0, color=EMOTION_COLOURS.get(c, "#495057"), label=c) for c in classes]
    ax.legend(handles=handles, labels=classes, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    ax.set_xlim(0, duration)
    ax.set_ylim(0, 1.45 if any(s["end"] - s["start"] < len(s["label"]) * seconds_per_char for s in segments) else 1.18)
    ax.set_yticks([0, 0.5, 1.0])
    ax.set_xlabel("time (s)")
    ax.set_ylabel("probability")
    label = data.get("label")
    ax.set_title(title or f"{Path(str(data.get('path', ''))).name}: {label} overall", fontsize=10)
    fig.tight_layout()
    if path is not None:
        from polyemo.io import atomic_path

        suffix = Path(path).suffix.lstrip(".") or "png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=suffix, dpi=120)
    return fig
