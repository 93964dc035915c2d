"""The recogniser: a bundle's encoder, normaliser and head over :class:`AudioItem` batches.

``Recogniser.run(items)`` is the one engine behind ``polyemo.load().predict``, ``polyemo
predict`` and the server's micro-batcher: items -> units (whole recordings or VAD segments)
-> features (batched by similar length; one encoder instance) -> normalised per group ->
head -> per-recording :class:`Prediction` (segments summarised by duration-weighted mean).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from polyemo.audio import SAMPLE_RATE, AudioError
from polyemo.bundle import DIMENSION_OUTPUT, Bundle, BundleError, check_encoder_identity, read_bundle
from polyemo.bundle import is_ensemble_bundle, read_ensemble_bundle
from polyemo.predict.adapt import BatchAdaptation
from polyemo.predict.encoder import check_shapes as _check_shapes
from polyemo.predict.encoder import load_encoder as _load_encoder
from polyemo.predict.inputs import AudioInput, AudioItem, audio_items, item_wave
from polyemo.predict.normalise import GroupNormaliser, own_group
from polyemo.predict.results import Prediction
from polyemo.predict.units import Unit, assemble, split_units
from polyemo.segment import VadConfig

if TYPE_CHECKING:
    import torch

    from polyemo.encoders.base import Encoder

OnError = Literal["raise", "record"]


def default_model_path() -> Path:
    """The model bundled with the package (``polyemo/data/default-model``)."""
    return Path(str(resources.files("polyemo") / "data" / "default-model"))


class Recogniser:
    """A loaded bundle: encoder, normalisation and head, ready to predict."""

    def __init__(self, bundle: Bundle, encoder: Encoder | None = None, *, vad: VadConfig | None = None,
                 batch_size: int = 8, precision: str | None = None) -> None:
        import torch

        self.bundle = bundle
        spec = bundle.config.features
        if encoder is None:
            encoder = _load_encoder(bundle, precision)
        elif precision not in (None, "auto") and getattr(encoder, "precision", precision) != precision:
            # a given encoder runs in its own precision; "auto" (the CLI default) accepts it
            raise ValueError(f"the given encoder runs in {encoder.precision}, not the requested {precision}")
        check_encoder_identity(bundle, encoder.identity)
        _check_shapes(bundle, encoder)
        self.encoder = encoder
        self.head = bundle.build_head()
        self.classes = list(bundle.labels.classes)
        self.dimensions = list(bundle.dimensions)
        self.vad = vad or VadConfig()
        self.batch_size = batch_size
        self.layers = spec.layers
        self._normaliser = GroupNormaliser(bundle)
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
            "precision": getattr(self.encoder.identity, "precision", None),  # what the encoder runs in
            "trained_precision": config.features.trained_precision,
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
        adapt: str | None = None,
        enrol: int | None = None,
    ) -> list[Prediction]:
        """Predict files and/or arrays (arrays at ``sample_rate``, default 16 kHz).

        ``speakers`` names each input's speaker (one name for all, or one per input): with a
        speaker-normalised model, inputs of the same speaker share statistics. By default each
        recording is its own group, so a single short clip uses the training statistics.
        ``segment`` forces (True) or prevents (False) voice-activity segmentation; by default
        recordings longer than the bundle's ``segment_above_seconds`` are segmented.
        ``on_error="record"`` returns failed inputs as predictions with ``error`` set instead
        of raising :class:`~polyemo.audio.AudioError`. ``adapt`` (issue 12): none, prior,
        uniform-prior, tent or enrolled (``enrol`` clips per speaker; needs ``speakers``), with
        all the inputs as one unlabelled batch (:mod:`polyemo.predict.adapt`).
        """
        items = audio_items(inputs, sample_rate, speakers, segment)
        adaptation = None if adapt in (None, "none") else BatchAdaptation(adapt, enrol)
        if adaptation is not None and adaptation.name == "enrolled" and speakers is None:
            raise ValueError("adapt='enrolled' needs speakers (one name per input)")
        predictions = self.run(items, on_error=on_error, adaptation=adaptation)
        if adaptation is not None:
            import warnings

            for note in adaptation.notes:
                if "too small" in note or "plain predictions" in note:
                    warnings.warn(note, stacklevel=2)
        return predictions

    def run(self, items: Sequence[AudioItem], *, on_error: OnError = "record",
            progress: Callable[[int], None] | None = None,
            adaptation: BatchAdaptation | None = None) -> list[Prediction]:
        """Predict prepared items (the batch interface used by the CLI and the server).

        ``progress(n)`` is called with the number of recordings finished (encoded or failed)
        as the work goes on. ``adaptation``: the call's items are one unlabelled batch for it.
        """
        advance = progress or (lambda n: None)
        if adaptation is not None:
            adaptation.check(self.bundle)
        predictions = [Prediction(source=item.source, group=item.group) for item in items]
        units: list[Unit] = []
        threshold = self.bundle.config.segment_above_seconds
        for index, item in enumerate(items):
            try:
                wave = item_wave(item)
                predictions[index].duration = round(wave.size / SAMPLE_RATE, 3)
                units += split_units(index, item, wave, self.vad, threshold)
            except AudioError as exc:
                if on_error == "raise":
                    raise
                predictions[index].error = str(exc)
                advance(1)
        if units:
            self._predict_units(units, items, predictions, on_error, advance, adaptation)
        return predictions

    def _predict_units(self, units: list[Unit], items: Sequence[AudioItem], predictions: list[Prediction],
                       on_error: OnError, advance: Callable[[int], None], adaptation: BatchAdaptation | None = None) -> None:
        features, failed = self._encode(units, items, on_error, advance)
        for index, message in failed.items():
            predictions[index].error = message
        keep = [i for i, unit in enumerate(units) if unit.item not in failed]
        if not keep:
            return
        units = [units[i] for i in keep]
        features = [features[i] for i in keep]
        # Without a group a recording is its own group (its segments share statistics).
        groups = [items[u.item].group or own_group(u.item) for u in units]
        features, sources = self._normaliser(features, groups)
        if adaptation is None:
            probabilities, dimensions = self._forward(features)
        else:  # issue 12: the call's recordings are one unlabelled batch
            probabilities, dimensions = adaptation.apply(self, units, features, groups, predictions)
        assemble(units, probabilities, dimensions, sources, predictions, self.classes, self.dimensions)

    def _encode(self, units: list[Unit], items: Sequence[AudioItem], on_error: OnError,
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
        # Only the blocks up to the deepest layer the head reads are run.
        layers = None if self.layers is None else [i % self.encoder.num_layers for i in self.layers]
        last = self.encoder.last_layer(layers) if hasattr(self.encoder, "last_layer") else None
        if self.bundle.config.features.kind == "pooled":
            pooled = self.encoder.pooled(waves) if last is None else self.encoder.pooled_upto(waves, last)
            pooled = np.asarray(pooled, dtype=np.float32)
            if layers is not None:
                pooled = pooled[:, layers]
            return list(pooled)
        frames = self.encoder.frames(waves) if last is None else self.encoder.frames_upto(waves, last)
        return [np.asarray(f.layers if layers is None else f.layers[layers], dtype=np.float32) for f in frames]

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
                    values = outputs[DIMENSION_OUTPUT].float().numpy()
                    columns = self.bundle.dimension_columns  # only the attributes the model was trained on
                    dimensions.append(values if columns is None else values[:, columns])
        return np.concatenate(probabilities), (np.concatenate(dimensions) if dimensions else None)


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


def load_model(path: str | os.PathLike[str] | None = None, *, encoder: Encoder | None = None,
               batch_size: int = 8, precision: str | None = None) -> Recogniser:
    """Load a bundle folder (default: the packaged default model) as a :class:`Recogniser`.

    The encoder runs at ``precision`` (default ``auto``: bf16 only where the hardware
    computes it natively, else fp32; ``fp32``, ``bf16`` or ``int8`` explicitly), whatever
    precision the bundle was trained with (``features.trained_precision``).

    Raises :class:`~polyemo.bundle.BundleError` for a missing or modified file, or when the
    installed encoder differs from the one the head was trained on.
    """
    if path is None:
        path = default_model_path()
        if not (path / "manifest.json").exists():
            raise BundleError(path, None, "no default model is installed in this polyemo; pass a bundle folder (--model)")
    if is_ensemble_bundle(path):  # several member bundles and a rule (issue 14)
        from polyemo.predict.ensemble import EnsembleRecogniser

        return EnsembleRecogniser(read_ensemble_bundle(path), Recogniser, _load_encoder, batch_size=batch_size,
                                  precision=precision, encoder=encoder)
    return Recogniser(read_bundle(path), encoder, batch_size=batch_size, precision=precision)
