"""What a fold's model consumes, behind one small interface.

An :class:`InputProvider` holds the rows it can serve (``manifest``), the encoder layers its
features carry (``layers``) and turns any subset of those rows into the
:class:`polyemo.train.SplitData` an estimator fits or predicts on (``split_data``). Every
stage after the plan -- the nested choices, the folds, the final model -- reads its data
through it and nothing else, so a new kind of input (raw audio for fine-tuning, text) is a
new provider in its own file.

:class:`CachedFeatures` is the provider of frozen-encoder features: pooled vectors or frame
sequences from :func:`polyemo.cache.features`, computed once per run with the process' one
encoder instance (:func:`shared_encoder`). :func:`load_inputs` is the whole path from a
configuration to its provider, for a run that needs its inputs again (its final model).
"""

from __future__ import annotations

import dataclasses
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from polyemo.experiment.config import ExperimentConfig
from polyemo.experiment.data import TARGET_COLUMN, experiment_manifest
from polyemo.experiment.dimensions import dimension_targets
from polyemo.experiment.errors import ExperimentError
from polyemo.experiment.plan import FeatureRequest
from polyemo.labels import gender_codes


def encode_targets(values: pd.Series, classes: list[str]) -> np.ndarray:
    """Class indices of ``values`` in ``classes`` (-1: not one of them)."""
    position = {c: i for i, c in enumerate(classes)}
    return np.array([position.get(v, -1) if isinstance(v, str) else -1 for v in values.astype(object)], dtype=np.int64)


def fold_class_masks(rows: pd.DataFrame, classes: list[str]) -> dict[str, np.ndarray]:
    """Per corpus, which of ``classes`` its TRAINING rows contain (never from test rows)."""
    return {str(corpus): np.array([c in set(part[TARGET_COLUMN]) for c in classes], dtype=bool)
            for corpus, part in rows.groupby("corpus", sort=True)}


class InputProvider(ABC):
    """The inputs of an experiment's rows, addressable by ``utt_id``."""

    #: the rows this provider serves (the plan's rows)
    manifest: pd.DataFrame
    #: encoder layers of the features, in order (what ``select_layer`` indexes)
    layers: list[int]
    #: identity of what made the inputs (e.g. ``EncoderIdentity.as_dict()``), for reuse checks
    identity: dict[str, Any]
    #: the experiment's dimensional targets (``DimensionsSpec`` as a dict; None: categorical only)
    dimensions: dict[str, Any] | None = None

    @abstractmethod
    def split_data(self, rows: pd.DataFrame, classes: list[str], masks: dict[str, np.ndarray]):
        """:class:`polyemo.train.SplitData` of ``rows`` (a subset of ``manifest``): inputs,
        target indices over ``classes``, each row's class mask (``masks`` by corpus; all
        classes where its corpus has none), speakers, ids and gender codes."""

    def training_data(self, rows: pd.DataFrame, classes: list[str], masks: dict[str, np.ndarray],
                      augment: Any = None):
        """What a fit trains on: :meth:`split_data` of ``rows``, plus augmented copies where the
        experiment asks for them (``augment``: its ``encoder.augment``) and this provider has them."""
        if augment is not None:
            raise ExperimentError(f"{type(self).__name__} has no augmented copies (encoder.augment is for "
                                  "pooled or frame features of the feature cache)")
        return self.split_data(rows, classes, masks)

    def _split_data(self, rows: pd.DataFrame, features, classes: list[str], masks: dict[str, np.ndarray]):
        from polyemo.train import SplitData

        corpus = rows["corpus"].astype(str).tolist()
        fallback = np.ones(len(classes), dtype=bool)
        return SplitData(
            features=features,
            labels=encode_targets(rows[TARGET_COLUMN], classes),
            masks=np.stack([masks.get(c, fallback) for c in corpus]) if len(rows) else np.zeros((0, len(classes)), bool),
            speakers=rows["speaker"].astype(object).to_numpy(),
            utt_ids=rows["utt_id"].astype(str).to_numpy(),
            gender=gender_codes(rows["gender"]),
            avd=dimension_targets(rows, self.dimensions),
        )


class CachedFeatures(InputProvider):
    """Frozen-encoder features of every row: an array (pooled: rows x layers x dim) or a list
    of per-row frame arrays, in ``manifest`` order."""

    def __init__(self, manifest: pd.DataFrame, array, layers: list[int], identity: dict[str, Any] | None = None,
                 n_failed: int = 0) -> None:
        self.manifest = manifest
        self.array = array
        self.layers = layers
        self.identity = dict(identity or {})
        #: rows of the requested manifest left out because the encoder could not use them
        self.n_failed = n_failed
        self.row_of = {u: i for i, u in enumerate(manifest["utt_id"].astype(str))}
        #: features of augmented copies (``encoder.augment``), each aligned with ``manifest``
        #: (NaN / None where a copy failed), and the settings that made them
        self.augmented: list[Any] = []
        self.augment_spec: dict[str, Any] | None = None

    def _rows(self, array, index: np.ndarray):
        return array[index] if isinstance(array, np.ndarray) else [array[i] for i in index]

    def _index(self, rows: pd.DataFrame) -> np.ndarray:
        return np.array([self.row_of[u] for u in rows["utt_id"].astype(str)], dtype=np.int64)

    def split_data(self, rows: pd.DataFrame, classes: list[str], masks: dict[str, np.ndarray]):
        return self._split_data(rows, self._rows(self.array, self._index(rows)), classes, masks)

    def training_data(self, rows: pd.DataFrame, classes: list[str], masks: dict[str, np.ndarray],
                      augment: Any = None):
        plain = self.split_data(rows, classes, masks)
        if augment is None:
            return plain
        wanted = augment.model_dump(mode="json") if hasattr(augment, "model_dump") else dict(augment)
        if self.augment_spec != wanted:
            raise ExperimentError(f"the inputs hold augmented copies made with {self.augment_spec}, the fit asks for "
                                  f"{wanted}: extract the inputs with the experiment's encoder.augment")
        from polyemo.train import SplitData

        index = self._index(rows)
        parts = [plain]
        for copy, array in enumerate(self.augmented):
            if isinstance(array, np.ndarray):
                keep = np.flatnonzero(np.isfinite(array[index]).all(axis=(1, 2)))
            else:
                keep = np.flatnonzero([array[i] is not None for i in index])
            part = self._split_data(rows.iloc[keep], self._rows(array, index[keep]), classes, masks)
            # copies are other rows of the same speakers and labels; their ids say which copy
            parts.append(dataclasses.replace(part, utt_ids=np.array([f"{u}#augment{copy}" for u in part.utt_ids],
                                                                     dtype=object)))
        return SplitData.concat(parts)

    @classmethod
    def extract(cls, name: str, manifest: pd.DataFrame, request: FeatureRequest, encoder, *, progress: bool,
                failures_path: Path | None) -> CachedFeatures:
        """The requested features of ``manifest`` (computing what the cache lacks); rows the
        encoder could not use are left out (and listed in ``failures_path``). Another kind
        of input (``features: audio``) is served by its own provider (:func:`provider_for`)."""
        if request.kind not in CACHED_KINDS:
            return provider_for(request.kind).extract(name, manifest, request, encoder, progress=progress,
                                                      failures_path=failures_path)
        if request.text is not None:  # speech + text (issue 13): its own provider
            import importlib

            module = importlib.import_module("polyemo.experiment.text_inputs")
            return module.PROVIDER.extract(name, manifest, request, encoder, progress=progress,
                                           failures_path=failures_path)
        from polyemo.cache import features

        try:
            extracted = features(
                manifest, encoder, layers=request.layers, kind=request.kind, cache_dir=request.cache_dir,
                workers=request.workers, batch_seconds=request.batch_seconds, progress=progress,
                frame_dtype=request.frame_dtype, failures_path=failures_path,
            )
        except (ValueError, KeyError, FileNotFoundError) as error:
            raise ExperimentError(f"experiment {name!r}: encoder {request.encoder!r}: {error}") from None
        ok = np.asarray(extracted.ok, dtype=bool)
        if not ok.any():
            raise ExperimentError(f"experiment {name!r}: no row got features (see {failures_path})")
        array = extracted.array[ok] if isinstance(extracted.array, np.ndarray) else [a for a, k in zip(extracted.array, ok) if k]
        provider = cls(manifest[ok].reset_index(drop=True), array, list(extracted.layers),
                       identity=dict(extracted.encoder), n_failed=int((~ok).sum()))
        provider.dimensions = request.dimensions
        if request.augment is not None:
            provider._extract_augmented(name, request, encoder, progress=progress)
        return provider

    def _extract_augmented(self, name: str, request: FeatureRequest, encoder, *, progress: bool) -> None:
        """Features of every augmented copy of every row, each copy cached in its own store."""
        from polyemo.augment import AugmentSpec
        from polyemo.cache import features
        from polyemo.encoders import get_encoder
        from polyemo.encoders.augmented import AugmentedEncoder

        spec = AugmentSpec(**request.augment)
        base = get_encoder(request.encoder, **request.options) if encoder is None or isinstance(encoder, str) else encoder
        for copy in range(spec.copies):
            try:
                extracted = features(
                    self.manifest, AugmentedEncoder(base, spec, copy), layers=request.layers, kind=request.kind,
                    cache_dir=request.cache_dir, workers=request.workers, batch_seconds=request.batch_seconds,
                    progress=progress, frame_dtype=request.frame_dtype, failures_path=None,
                )
            except (ValueError, KeyError, FileNotFoundError) as error:
                raise ExperimentError(f"experiment {name!r}: augmented copy {copy}: {error}") from None
            if list(extracted.layers) != list(self.layers):
                raise ExperimentError(f"experiment {name!r}: augmented copy {copy} has layers {extracted.layers}, "
                                      f"the plain features {self.layers}")
            self.augmented.append(extracted.array)
        self.augment_spec = spec.model_dump(mode="json")


#: feature kinds the feature cache serves; any other kind K is served by the ``PROVIDER`` of
#: the module ``polyemo.experiment.<K>_inputs`` (raw audio for fine-tuning: audio_inputs.py)
CACHED_KINDS = ("pooled", "frames")


def provider_for(kind: str) -> type[InputProvider]:
    """The InputProvider class of a feature kind (a new kind of input is a new module)."""
    import importlib

    if kind in CACHED_KINDS:
        return CachedFeatures
    try:
        # imported by name, not by an import statement: the provider's module imports this one
        module = importlib.import_module(f"polyemo.experiment.{kind}_inputs")
    except ModuleNotFoundError:
        raise ExperimentError(f"no input provider for features {kind!r} (polyemo/experiment/{kind}_inputs.py)") from None
    return module.PROVIDER


#: Kept for older code and tests: the cached-features provider.
FoldInputs = CachedFeatures

# The encoder of the latest run in this process: the cache needs an encoder (for its identity)
# even when every feature is cached, and loading a neural encoder takes seconds, so the
# cells of a grid, and a run and its final model, share one instance.
_ENCODER: dict[str, Any] = {}


def shared_encoder(config: ExperimentConfig):
    """The experiment's encoder, reused from the previous run in this process when identical."""
    from polyemo.encoders import get_encoder

    options = config.encoder.encoder_options()
    key = json.dumps([config.encoder.name, options], sort_keys=True, default=str)
    if key not in _ENCODER:
        _ENCODER.clear()  # one encoder in memory at a time
        try:
            _ENCODER[key] = get_encoder(config.encoder.name, **options)
        except (ValueError, KeyError, FileNotFoundError, TypeError) as error:
            raise ExperimentError(f"experiment {config.name!r}: cannot load encoder {config.encoder.name!r}: {error}") from None
    return _ENCODER[key]


def load_inputs(config: ExperimentConfig, *, progress: bool = False, failures_path: Path | None = None) -> CachedFeatures:
    """The inputs of a configuration's rows: its manifest, its feature request, the shared encoder."""
    manifest, _ = experiment_manifest(config, show_progress=progress)
    return CachedFeatures.extract(config.name, manifest, FeatureRequest.of(config), shared_encoder(config),
                                  progress=progress, failures_path=failures_path)
