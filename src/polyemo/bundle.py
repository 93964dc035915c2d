"""Model bundles: a trained head with everything needed to use it, in one verifiable folder.

Layout (every file listed with its SHA-256 in ``manifest.json``)::

    config.json               head config, feature spec (encoder identity, layers, pooled/frames),
                              normalisation mode, prediction settings
    head.safetensors          head weights (a polyemo.heads.HeadModel state dict)
    labels.json               label set (classes, merges, drops) and dimensional outputs
    normalisation.safetensors feature normalisation statistics of the training data
    metrics.json              evaluation results of the run that produced the model
    MODEL_CARD.md             training corpora, languages, protocol, scores, limitations
    manifest.json             {file: {sha256, bytes}} for all of the above

:func:`export_bundle` writes a bundle atomically (a temporary folder renamed into place);
:func:`read_bundle` verifies hashes and parses it (no encoder needed);
``polyemo.load(path)`` builds a :class:`~polyemo.predict.Recogniser` from it and checks the
installed encoder is the one the head was trained on. Every problem is a :class:`BundleError`
naming the file and what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from polyemo.io import publish_folder
from polyemo.labels import LabelSet

if TYPE_CHECKING:
    import torch

    from polyemo.heads import HeadConfig
    from polyemo.train.normalise import Normaliser

BUNDLE_FORMAT = "polyemo-bundle/1"
CONFIG = "config.json"
HEAD = "head.safetensors"
LABELS = "labels.json"
NORMALISATION = "normalisation.safetensors"
METRICS = "metrics.json"
CARD = "MODEL_CARD.md"
MANIFEST = "manifest.json"
#: optional: what test-time adaptation needs from training (issue 12; listed in the manifest when present)
ADAPTATION = "adaptation.safetensors"
BUNDLE_FILES = (CONFIG, HEAD, LABELS, NORMALISATION, METRICS, CARD)
#: The head output holding arousal/valence/dominance (polyemo.heads.multitask) and its dims.
DIMENSION_OUTPUT = "avd"
DIMENSIONS = ("arousal", "valence", "dominance")


class BundleError(ValueError):
    """A bundle that cannot be used; ``file`` names the bundle file and ``reason`` the problem."""

    def __init__(self, bundle: str | os.PathLike[str], file: str | None, reason: str) -> None:
        self.bundle = str(bundle)
        self.file = file
        self.reason = reason
        where = f"{self.bundle}/{file}" if file else self.bundle
        super().__init__(f"{where}: {reason}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FeatureSpec(_Strict):
    """Which features the head reads: encoder weights, their identity, layers, pooled or frames.

    A bundle names the encoder weights and layers, not a compute precision: it accepts
    features of the same weights computed in any precision (fp32 and bf16 features give the
    same labels, tests/test_precision_agreement.py), records the one it was trained with
    (``trained_precision``), and the encoder runs at ``auto`` unless told otherwise.
    Bundles written before this field read their ``precision`` as ``trained_precision``.
    """

    encoder: str = Field(description="registered encoder name, e.g. 'whisper-base'")
    identity: dict[str, Any] = Field(description="EncoderIdentity.as_dict() of the encoder used in training")
    trained_precision: str | None = Field(
        None, description="encoder precision of the training features (default and must match: the identity's); "
        "prediction runs the encoder at 'auto' unless told otherwise")
    layers: list[int] | None = Field(None, description="encoder layers fed to the head, in order; None = all")
    kind: Literal["pooled", "frames"] = Field("pooled", description="utterance-pooled or frame features")
    feature_dim: int = Field(gt=0, description="size of one layer's feature vector as the head sees it")
    finetune: dict[str, Any] | None = Field(
        None, description="a fine-tuned encoder (polyemo.train.finetuning.deploy.finetune_spec): its settings, "
        "the file of the tensors fine-tuning changed (listed in manifest.json) and their names; None: frozen")

    @model_validator(mode="before")
    @classmethod
    def _legacy_precision(cls, value: Any) -> Any:
        if isinstance(value, dict) and "precision" in value:
            value = dict(value)
            legacy = value.pop("precision")
            if value.get("trained_precision") is None:
                value["trained_precision"] = legacy
            elif legacy is not None and legacy != value["trained_precision"]:
                raise ValueError(f"precision {legacy!r} differs from trained_precision {value['trained_precision']!r}")
        return value

    @model_validator(mode="after")
    def _precision_of_identity(self) -> FeatureSpec:
        stated = self.identity.get("precision")
        if self.trained_precision is None:
            self.trained_precision = str(stated or "fp32")
        elif stated is not None and stated != self.trained_precision:
            raise ValueError(f"trained_precision {self.trained_precision!r} differs from the encoder identity's {stated!r}")
        return self

    @property
    def precision(self) -> str:
        """Deprecated name of :attr:`trained_precision` (the bundle does not fix a precision)."""
        return str(self.trained_precision)

    @property
    def num_layers(self) -> int:
        if self.layers is None:
            raise ValueError("FeatureSpec.layers is None: the number of layers is the encoder's")
        return len(self.layers)


class NormalisationSpec(_Strict):
    """How features were normalised in training (a :mod:`polyemo.train.normalise` normaliser).

    ``mode``: none, global, utterance, test-speaker (read from older bundles as ``speaker``)
    or enrolled-speaker; ``params``: the normaliser's options (``min_utterances`` for
    test-speaker, ``enrol`` and ``seed`` for enrolled-speaker, ``axis`` for utterance). Its
    statistics (training ``mean``/``std``) are in ``normalisation.safetensors``. At
    prediction time a test-speaker model standardises each group (speaker column, folder or
    recording) of at least ``min_utterances`` units with all of the group's units; an
    enrolled-speaker model with ``enrol`` of them (at most all but one); smaller groups fall
    back to the training statistics.
    """

    mode: Literal["none", "global", "utterance", "test-speaker", "enrolled-speaker"] = "none"
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _alias(cls, value: Any) -> Any:
        if isinstance(value, dict) and value.get("mode") == "speaker":
            return {**value, "mode": "test-speaker"}
        return value

    def describe(self) -> str:
        """The mode and what its statistics are (``polyemo.train.normalise.describe_normalisation``)."""
        from polyemo.train.normalise import describe_normalisation

        return describe_normalisation(self.mode, self.params.get("enrol"))


class BundleHeadSpec(_Strict):
    """The head as saved in a bundle (its config and the shapes it was built for); not
    :class:`polyemo.experiment.config.HeadSpec` (which head an experiment trains)."""

    config: dict[str, Any] = Field(description="polyemo.heads.HeadConfig as a dict")
    num_layers: int = Field(gt=0, description="layers the HeadModel was built for")
    feature_dim: int = Field(gt=0)
    num_classes: int = Field(ge=2)


#: deprecated alias (clashed with polyemo.experiment.config.HeadSpec); use BundleHeadSpec
HeadSpec = BundleHeadSpec


class ModelCard(BaseModel):
    """What MODEL_CARD.md says: where the model comes from and how good it is."""

    name: str
    description: str = ""
    corpora: list[str] = Field(default_factory=list)
    languages: list[str] = Field(default_factory=list)
    protocol: str = ""
    scores: dict[str, float] = Field(default_factory=dict, description="headline scores, e.g. {'UA': 0.71}")
    license: str = ""
    limitations: str = ""
    extra: dict[str, Any] = Field(default_factory=dict)
    sections: dict[str, str] = Field(default_factory=dict, description="further sections: title -> markdown")

    def markdown(self, config: "BundleConfig", labels: LabelSet, dimensions: list[str]) -> str:
        features = config.features
        lines = [f"# {self.name}", ""]
        if self.description:
            lines += [self.description, ""]
        lines += [
            "| | |",
            "|---|---|",
            f"| classes | {', '.join(labels.classes)} |",
            f"| dimensions | {', '.join(dimensions) or 'none'} |",
            f"| encoder | {features.encoder} (weights {features.identity.get('weights_hash', '?')}; trained on "
            f"{features.trained_precision} features, runs at the precision the hardware computes natively "
            "(`auto`: bf16 where native, else fp32) unless `--precision` says otherwise) |",
            f"| features | {features.kind}, layers {features.layers if features.layers is not None else 'all'} |",
            f"| head | {config.head.config.get('name')} |",
            f"| normalisation | {config.normalisation.describe()} |",
            f"| training corpora | {', '.join(self.corpora) or 'not stated'} |",
            f"| languages | {', '.join(self.languages) or 'not stated'} |",
            f"| protocol | {self.protocol or 'not stated'} |",
            f"| license | {self.license or 'not stated'} |",
            f"| created | {config.created} (polyemo {config.polyemo_version}) |",
            "",
        ]
        if self.scores:
            lines += ["## Scores", "", "| metric | value |", "|---|---|"]
            lines += [f"| {name} | {value:.4f} |" for name, value in self.scores.items()]
            lines += [""]
        for title, text in self.sections.items():
            lines += [f"## {title}", "", text.strip(), ""]
        if self.limitations:
            lines += ["## Limitations", "", self.limitations, ""]
        if self.extra:
            lines += ["## Details", "", "```json", json.dumps(self.extra, indent=2, default=str), "```", ""]
        lines += ["Files and their SHA-256 are listed in `manifest.json`; `polyemo.load()` verifies them.", ""]
        return "\n".join(lines)


class AdaptationSpec(_Strict):
    """What ``polyemo predict --adapt`` needs from training (issue 12), beside the normaliser.

    ``settings``: adapter name -> its parameters (``strength`` ...), chosen by an inner
    protocol over the training languages when ``chosen_by`` says so, else the defaults
    (strength 1.0). ``ships``: the adaptation the model card reports beside the plain score
    (None: none). Arrays in ``adaptation.safetensors``: ``source_prior`` (C,), the model's mean
    prediction on its ``n_rows`` training rows (``prior-em`` starts from it), and
    ``feature_mean`` / ``feature_std`` (L, D), the moments of the normalised training features
    the head saw (``enrolled`` maps each speaker's enrolment statistics onto them).
    """

    settings: dict[str, dict[str, Any]] = Field(default_factory=dict)
    chosen_by: str = "default settings (strength 1.0): no inner choice was made"
    selection: dict[str, Any] = Field(default_factory=dict, description="per adapter: candidates, inner scores, chosen")
    ships: str | None = None
    enrol: int = Field(5, ge=1, description="enrolment clips per speaker of --adapt enrolled (default)")
    n_rows: int = Field(0, ge=0, description="training rows the source prior and feature moments come from")


class BundleConfig(_Strict):
    format: str = BUNDLE_FORMAT
    name: str
    created: str
    polyemo_version: str
    head: BundleHeadSpec
    features: FeatureSpec
    normalisation: NormalisationSpec = Field(default_factory=NormalisationSpec)
    segment_above_seconds: float = Field(30.0, gt=0, description="longer recordings are split by voice activity")
    card: ModelCard
    #: test-time adaptation state (issue 12); None: a bundle written before it (no source prior)
    adaptation: AdaptationSpec | None = None


@dataclass
class Bundle:
    """A verified, parsed bundle (weights still as tensors; no encoder loaded)."""

    path: Path
    config: BundleConfig
    labels: LabelSet
    dimensions: list[str]
    head_state: dict[str, torch.Tensor]
    normalisation_stats: dict[str, np.ndarray]
    metrics: dict[str, Any]
    card_markdown: str
    #: columns of the head's ``avd`` output that ``dimensions`` name (None: all, in order); a
    #: model trained on arousal only predicts arousal, never the untrained columns' midpoints
    dimension_columns: list[int] | None = None
    #: ``adaptation.safetensors`` (see :class:`AdaptationSpec`); empty without one
    adaptation_stats: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.config.name

    def head_config(self) -> HeadConfig:
        from polyemo.heads import HeadConfig

        try:
            return HeadConfig(**self.config.head.config)
        except (ValidationError, KeyError) as exc:
            raise BundleError(self.path, CONFIG, f"head config is not usable: {exc}") from exc

    def build_head(self) -> torch.nn.Module:
        """The HeadModel with the bundle's weights loaded, in eval mode."""
        from polyemo.heads import build_head

        spec = self.config.head
        model = build_head(self.head_config(), spec.num_layers, spec.feature_dim, spec.num_classes)
        if not hasattr(model, "load_state_dict"):
            raise BundleError(self.path, CONFIG, f"head {spec.config.get('name')!r} is not a torch head")
        try:
            model.load_state_dict(self.head_state, strict=True)
        except RuntimeError as exc:
            raise BundleError(self.path, HEAD, f"weights do not fit head {spec.config.get('name')!r}: {exc}") from exc
        return model.eval()


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


#: Normaliser state entries that are per training speaker: not shipped (privacy, size), not
#: needed (prediction-time groups bring their own statistics).
_TRAINING_SPEAKER_STATE = ("speakers", "speaker_mean", "speaker_std", "speaker_count")


def normaliser_to_bundle(normaliser: Normaliser | None) -> tuple[NormalisationSpec, dict[str, np.ndarray]]:
    """Split a fitted normaliser into its spec (kind, scalar options) and statistics arrays."""
    if normaliser is None:
        return NormalisationSpec(mode="none"), {}
    params: dict[str, Any] = {}
    stats: dict[str, np.ndarray] = {}
    for key, value in normaliser.state().items():
        if key in _TRAINING_SPEAKER_STATE:
            continue
        array = np.asarray(value)
        if array.ndim == 0:
            params[key] = array.item()
        elif array.dtype.kind in "fiub":
            stats[key] = np.ascontiguousarray(array)
        else:
            raise ValueError(f"normaliser state {key!r} of dtype {array.dtype} cannot be stored")
    return NormalisationSpec(mode=normaliser.kind, params=params), stats


def normaliser_from_bundle(spec: NormalisationSpec, stats: Mapping[str, np.ndarray]) -> Normaliser | None:
    """Rebuild the normaliser for prediction (speaker normalisers start without any speaker)."""
    from polyemo.train.normalise import NORMALISERS

    if spec.mode == "none":
        return None
    normaliser = NORMALISERS[spec.mode].__new__(NORMALISERS[spec.mode])
    state: dict[str, np.ndarray] = {k: np.asarray(v) for k, v in spec.params.items()}
    state.update(stats)
    if spec.mode == "test-speaker":
        shape = np.asarray(stats["mean"]).shape
        state.update(speakers=np.array([], dtype=str), speaker_mean=np.zeros((0, *shape)),
                     speaker_std=np.zeros((0, *shape)), speaker_count=np.zeros(0, dtype=np.int64))
    normaliser.load_state(state)
    return normaliser


def export_bundle(
    target: str | os.PathLike[str],
    *,
    model: torch.nn.Module,
    head_config: HeadConfig | Mapping[str, Any],
    features: FeatureSpec,
    labels: LabelSet,
    card: ModelCard,
    normaliser: Normaliser | None = None,
    metrics: Mapping[str, Any] | None = None,
    dimensions: list[str] | None = None,
    segment_above_seconds: float = 30.0,
    overwrite: bool = False,
    extra_files: Mapping[str, Any] | None = None,
    adaptation: tuple[AdaptationSpec, Mapping[str, np.ndarray]] | None = None,
) -> Path:
    """Write a bundle folder at ``target`` atomically and return its path.

    ``model`` is the trained :class:`polyemo.heads.HeadModel` (built with ``head_config`` for
    ``features``); ``normaliser`` the fitted :mod:`polyemo.train.normalise` normaliser (None:
    no normalisation; only its training statistics are kept, never per-speaker ones);
    ``dimensions`` the regression outputs (default: arousal/valence/dominance when the head
    has an ``avd`` output). ``extra_files``: further safetensors files, name -> tensors
    (a fine-tuned encoder's weights), listed with their hashes like the others. Nothing
    appears at ``target`` unless everything was written. ``adaptation``: the
    :class:`AdaptationSpec` and its arrays (``adaptation.safetensors``).
    """
    import safetensors.torch
    import torch

    from polyemo import __version__

    target = Path(target)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target}: already exists (pass overwrite=True to replace it)")
    head_dict = head_config.model_dump() if hasattr(head_config, "model_dump") else dict(head_config)
    num_layers = int(getattr(model, "num_layers", 0) or (len(features.layers) if features.layers else 0))
    head = getattr(model, "head", None)
    if head is None or num_layers < 1:
        raise TypeError("export_bundle needs a polyemo.heads.HeadModel (a torch head with its layer reduction)")
    outputs = {o.name: o for o in getattr(head, "outputs", [])}
    if dimensions is None:  # the attributes the head was trained on (a dimensional head names them)
        dimensions = list(getattr(head, "attributes", DIMENSIONS)) if DIMENSION_OUTPUT in outputs else []
    columns = None
    if dimensions and DIMENSION_OUTPUT in outputs and outputs[DIMENSION_OUTPUT].size == len(DIMENSIONS) \
            and list(dimensions) != list(DIMENSIONS) and set(dimensions) <= set(DIMENSIONS):
        columns = [DIMENSIONS.index(d) for d in dimensions]  # a subset of the avd columns
    elif dimensions and (DIMENSION_OUTPUT not in outputs or outputs[DIMENSION_OUTPUT].size != len(dimensions)):
        raise ValueError(f"dimensions {dimensions} need a head output {DIMENSION_OUTPUT!r} of that size")
    if head.num_classes != len(labels.classes):
        raise ValueError(f"head predicts {head.num_classes} classes but the label set has {len(labels.classes)}")
    if features.layers is not None and len(features.layers) != num_layers:
        raise ValueError(f"feature spec selects {len(features.layers)} layers but the head takes {num_layers}")
    head_input = "frames" if head.input_kind == "frames" else "pooled"
    if features.kind != head_input:
        raise ValueError(f"feature spec says {features.kind!r} features but the head takes {head_input!r}")

    normalisation, stats = normaliser_to_bundle(normaliser)
    config = BundleConfig(
        name=card.name,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        polyemo_version=__version__,
        head=BundleHeadSpec(config=head_dict, num_layers=num_layers, feature_dim=features.feature_dim,
                      num_classes=len(labels.classes)),
        features=features,
        normalisation=normalisation,
        segment_above_seconds=segment_above_seconds,
        card=card,
        adaptation=None if adaptation is None else adaptation[0],
    )
    extra_files = dict(extra_files or {})
    if adaptation is not None:
        extra_files[ADAPTATION] = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))
                                   for k, v in adaptation[1].items()}
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        def dump(name: str, data: Any) -> None:
            (staging / name).write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")

        dump(CONFIG, config.model_dump(mode="json"))
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        safetensors.torch.save_file(state, str(staging / HEAD), metadata={"format": BUNDLE_FORMAT})
        dump(LABELS, {"label_set": labels.model_dump(), "classes": labels.classes, "dimensions": dimensions,
                      **({"dimension_columns": columns} if columns is not None else {})})
        stats = {k: torch.from_numpy(v.copy()) for k, v in stats.items()}
        safetensors.torch.save_file(stats, str(staging / NORMALISATION),
                                    metadata={"format": BUNDLE_FORMAT, "mode": config.normalisation.mode})
        dump(METRICS, dict(metrics or {}))
        (staging / CARD).write_text(card.markdown(config, labels, dimensions), encoding="utf-8")
        for name, tensors in (extra_files or {}).items():
            if Path(name).name != name or name in BUNDLE_FILES:
                raise ValueError(f"extra bundle file {name!r} must be a new plain file name")
            safetensors.torch.save_file(dict(tensors), str(staging / name), metadata={"format": BUNDLE_FORMAT})
        manifest = {
            "format": BUNDLE_FORMAT,
            "files": {name: {"sha256": sha256_file(staging / name), "bytes": (staging / name).stat().st_size}
                      for name in (*BUNDLE_FILES, *(extra_files or {}))},
        }
        dump(MANIFEST, manifest)
        for path in staging.iterdir():
            path.chmod(0o644)  # readable by all, like any installed data (safetensors writes 0600)
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        staging.chmod(0o755)
        publish_folder(staging, target)  # the old bundle stays intact until the new one is complete
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def export_estimator(
    target: str | os.PathLike[str],
    estimator: Any,
    *,
    encoder: str,
    identity: Any,
    labels: LabelSet,
    card: ModelCard,
    encoder_layers: list[int] | None = None,
    metrics: Mapping[str, Any] | None = None,
    segment_above_seconds: float = 30.0,
    overwrite: bool = False,
    adaptation: tuple[AdaptationSpec, Mapping[str, np.ndarray]] | None = None,
) -> Path:
    """Export a fitted torch estimator (:class:`polyemo.train.trainer.Trainer`) as a bundle.

    ``identity``: the encoder's EncoderIdentity (or its ``as_dict()``); ``encoder_layers``: the
    encoder layers the estimator's features held, in order (None: all of them). When the head
    config picks one of them (``layers: <index>``), the bundle reads only that encoder layer.
    Classical (scikit-learn) heads have no torch weights and cannot be bundled. A fine-tuned
    encoder (the ``finetune`` estimator) goes to :func:`export_finetuned`.
    """
    if getattr(estimator, "kind", "") == "finetune":
        return export_finetuned(target, estimator, encoder=encoder, identity=identity, labels=labels, card=card,
                                metrics=metrics, segment_above_seconds=segment_above_seconds, overwrite=overwrite)
    model = getattr(estimator, "model", None)
    if not getattr(estimator, "fitted", False):
        raise ValueError("the estimator is not fitted")
    if model is None or not hasattr(model, "state_dict"):
        raise TypeError(f"only torch heads can be bundled; {type(estimator).__name__} has no torch model")
    if list(estimator.class_names) != list(labels.classes):
        raise ValueError(f"estimator classes {estimator.class_names} differ from the label set {labels.classes}")
    head_config = estimator.head_config
    layers = list(encoder_layers) if encoder_layers is not None else None
    index = head_config.layers
    if isinstance(index, int) and not isinstance(index, bool):
        # The estimator selected one loaded layer before normalising; the head saw layer 0 of 1.
        if layers is None:
            if index < 0:
                raise ValueError(f"layer index {index} counts from the top: pass encoder_layers")
            layers = [index]
        else:
            layers = [layers[index]]
        head_config = head_config.model_copy(update={"layers": 0})
    identity_dict = identity.as_dict() if hasattr(identity, "as_dict") else dict(identity)
    features = FeatureSpec(
        encoder=encoder,
        identity=identity_dict,
        layers=layers,
        kind="frames" if model.input_kind == "frames" else "pooled",
        feature_dim=int(estimator.feature_dim),
    )
    return export_bundle(target, model=model, head_config=head_config, features=features, labels=labels,
                         card=card, normaliser=estimator.normaliser, metrics=metrics,
                         segment_above_seconds=segment_above_seconds, overwrite=overwrite, adaptation=adaptation)


def export_finetuned(target: str | os.PathLike[str], estimator: Any, *, encoder: str, identity: Any, labels: LabelSet,
                     card: ModelCard, metrics: Mapping[str, Any] | None = None, segment_above_seconds: float = 30.0,
                     overwrite: bool = False) -> Path:
    """Bundle a fitted :class:`polyemo.train.finetune.FinetuneEstimator`: the pooled ``linear``
    head as ``head.safetensors``, the tensors fine-tuning changed in the encoder (LoRA
    adapters or its unfrozen weights) as ``encoder.safetensors``, and the settings that
    rebuild the model from the pretrained weights (``features.finetune``); the pretrained
    encoder's identity is checked when the bundle is loaded."""
    from polyemo.train.finetuning.deploy import ENCODER_FILE, encoder_tensors, finetune_spec

    model = getattr(estimator, "model", None)
    if not getattr(estimator, "fitted", False) or model is None:
        raise ValueError("the fine-tuning estimator is not fitted")
    if list(estimator.class_names) != list(labels.classes):
        raise ValueError(f"estimator classes {estimator.class_names} differ from the label set {labels.classes}")
    identity_dict = identity.as_dict() if hasattr(identity, "as_dict") else dict(identity)
    identity_dict = {k: v for k, v in identity_dict.items() if k != "inputs"}
    features = FeatureSpec(encoder=encoder, identity=identity_dict, layers=None, kind="pooled",
                           feature_dim=int(model.encoder.hidden_size), finetune=finetune_spec(model, estimator.settings))
    return export_bundle(target, model=model.head, head_config=model.head_config, features=features, labels=labels,
                         card=card, normaliser=None, metrics=metrics, segment_above_seconds=segment_above_seconds,
                         overwrite=overwrite, extra_files={ENCODER_FILE: encoder_tensors(model)})


def _read_json(bundle: Path, name: str) -> Any:
    try:
        return json.loads((bundle / name).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(bundle, name, f"cannot read JSON ({exc})") from exc


def verify_bundle(path: str | os.PathLike[str]) -> dict[str, str]:
    """Check every file against ``manifest.json``; returns {file: sha256}. Raises :class:`BundleError`."""
    bundle = Path(path)
    if not bundle.is_dir():
        raise BundleError(bundle, None, "not a bundle folder (no such directory)")
    if not (bundle / MANIFEST).is_file():
        raise BundleError(bundle, MANIFEST, "missing: not a polyemo bundle or an incomplete copy")
    manifest = _read_json(bundle, MANIFEST)
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT or not isinstance(manifest.get("files"), dict):
        raise BundleError(bundle, MANIFEST, f"not a {BUNDLE_FORMAT} manifest")
    listed: dict[str, Any] = manifest["files"]
    for name in BUNDLE_FILES:
        if name not in listed:
            raise BundleError(bundle, name, "not listed in manifest.json")
    hashes: dict[str, str] = {}
    for name, entry in listed.items():
        file = bundle / name
        if Path(name).name != name:
            raise BundleError(bundle, MANIFEST, f"lists a path outside the bundle: {name!r}")
        if not file.is_file():
            raise BundleError(bundle, name, "missing (listed in manifest.json)")
        actual = sha256_file(file)
        if not isinstance(entry, dict) or actual != entry.get("sha256"):
            raise BundleError(bundle, name, f"SHA-256 mismatch: the file was modified or corrupted "
                                            f"(expected {str(entry.get('sha256') if isinstance(entry, dict) else entry)[:16]}…, "
                                            f"found {actual[:16]}…)")
        hashes[name] = actual
    return hashes


def read_bundle(path: str | os.PathLike[str]) -> Bundle:
    """Verify and parse a bundle folder (does not load the encoder)."""
    import safetensors.torch
    from safetensors import SafetensorError

    bundle = Path(path)
    verified = verify_bundle(bundle)
    try:
        config = BundleConfig(**_read_json(bundle, CONFIG))
    except (ValidationError, TypeError) as exc:
        raise BundleError(bundle, CONFIG, f"invalid config: {exc}") from exc
    if config.format != BUNDLE_FORMAT:
        raise BundleError(bundle, CONFIG, f"format {config.format!r} is not supported (this polyemo reads {BUNDLE_FORMAT})")
    labels_data = _read_json(bundle, LABELS)
    try:
        if not isinstance(labels_data, dict):
            raise TypeError(f"expected a JSON object, got {type(labels_data).__name__}")
        labels = LabelSet(**labels_data["label_set"])
        dimensions = [str(d) for d in (labels_data.get("dimensions") or [])]
        columns = labels_data.get("dimension_columns")
        columns = None if columns is None else [int(c) for c in columns]
        if columns is not None and len(columns) != len(dimensions):
            raise ValueError(f"{len(dimensions)} dimensions but {len(columns)} dimension columns")
    except (ValidationError, KeyError, TypeError, ValueError) as exc:
        raise BundleError(bundle, LABELS, f"invalid label set: {exc}") from exc
    if len(labels.classes) != config.head.num_classes:
        raise BundleError(bundle, LABELS, f"{len(labels.classes)} classes but the head predicts {config.head.num_classes}")
    try:
        head_state = safetensors.torch.load_file(str(bundle / HEAD))
    except (SafetensorError, OSError, ValueError) as exc:
        raise BundleError(bundle, HEAD, f"cannot read weights ({exc})") from exc
    try:
        stats = {k: v.numpy() for k, v in safetensors.torch.load_file(str(bundle / NORMALISATION)).items()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise BundleError(bundle, NORMALISATION, f"cannot read statistics ({exc})") from exc
    adaptation_stats: dict[str, np.ndarray] = {}
    if config.adaptation is not None:
        if ADAPTATION not in verified:
            raise BundleError(bundle, ADAPTATION, "config.json names an adaptation state but manifest.json lists no such file")
        try:
            adaptation_stats = {k: v.numpy() for k, v in safetensors.torch.load_file(str(bundle / ADAPTATION)).items()}
        except (SafetensorError, OSError, ValueError) as exc:
            raise BundleError(bundle, ADAPTATION, f"cannot read the adaptation state ({exc})") from exc
    return Bundle(
        path=bundle,
        config=config,
        labels=labels,
        dimensions=dimensions,
        head_state=head_state,
        normalisation_stats=stats,
        metrics=_read_json(bundle, METRICS),
        card_markdown=_read_text(bundle, CARD),
        dimension_columns=columns,
        adaptation_stats=adaptation_stats,
    )


def _read_text(bundle: Path, name: str) -> str:
    try:
        return (bundle / name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleError(bundle, name, f"cannot read text ({exc})") from exc


#: identity fields that must match for a bundle's head to read an encoder's features;
#: precision is not one of them (fp32 and bf16 features of the same weights give the same labels)
IDENTITY_FIELDS = ("name", "weights_hash", "options")


def _check_versions(bundle: Bundle, trained: dict[str, str], installed: dict[str, str]) -> None:
    """Another feature-code version computes other numbers: refused. Other library versions
    may shift them slightly: a warning (bundles of older polyemo recorded no versions)."""
    if not trained or not installed:
        return
    if trained.get("feature_code") != installed.get("feature_code"):
        raise BundleError(bundle.path, CONFIG, f"the head was trained on features of feature code version "
                          f"{trained.get('feature_code')}, this polyemo computes version {installed.get('feature_code')}")
    drift = [f"{lib} {trained[lib]} -> {installed.get(lib)}" for lib in sorted(trained)
             if lib != "feature_code" and trained[lib] != installed.get(lib)]
    if drift:
        import warnings

        warnings.warn(f"{bundle.path}: trained with other library versions ({'; '.join(drift)}); features may "
                      "drift slightly (benchmarks/precision_agreement.py measures such agreement)", stacklevel=3)


def check_encoder_identity(bundle: Bundle, identity: Any) -> None:
    """Raise :class:`BundleError` unless ``identity`` (EncoderIdentity) has the weights and
    options the head was trained on; the compute precision may differ."""
    expected = bundle.config.features.identity
    actual = identity.as_dict() if hasattr(identity, "as_dict") else dict(identity)
    if actual.get("key") == expected.get("key"):
        return
    _check_versions(bundle, expected.get("versions") or {}, actual.get("versions") or {})
    differences = [
        f"{field} {expected.get(field)!r} != installed {actual.get(field)!r}"
        for field in IDENTITY_FIELDS
        if expected.get(field) != actual.get(field)
    ]
    if not differences:
        return  # same weights and options in another precision
    raise BundleError(
        bundle.path,
        CONFIG,
        "encoder identity mismatch: the head was trained on other encoder output ("
        + "; ".join(differences)
        + ")",
    )


# --- ensemble bundles (issue 14) ------------------------------------------------------------------
#
# An ensemble bundle is a folder of member bundles and the rule that combines them::
#
#     ensemble.json   format, name, classes, the fitted rule (polyemo.ensemble Rule.state()),
#                     members in order (name, folder, scores), card facts
#     MODEL_CARD.md   members, rule, per-member and ensemble scores
#     members/<name>/ one ordinary bundle per member (verified by read_bundle)
#     manifest.json   {file: {sha256, bytes}} of ensemble.json and MODEL_CARD.md; each member
#                     folder verifies itself with its own manifest.json

ENSEMBLE_FORMAT = "polyemo-ensemble-bundle/1"
ENSEMBLE_CONFIG = "ensemble.json"
ENSEMBLE_MEMBERS = "members"


@dataclass
class EnsembleBundle:
    """A verified ensemble bundle: its members' bundles (parsed) and the fitted rule's state."""

    path: Path
    name: str
    classes: list[str]
    rule: dict[str, Any]
    members: dict[str, Bundle]
    info: dict[str, Any]
    card_markdown: str


def is_ensemble_bundle(path: str | os.PathLike[str]) -> bool:
    return (Path(path) / ENSEMBLE_CONFIG).is_file()


def _ensemble_card(name: str, classes: list[str], rule: dict[str, Any], members: list[dict[str, Any]],
                   scores: dict[str, Any], description: str) -> str:
    params = json.dumps(rule.get("params") or {})
    lines = [f"# {name}", "", description or f"An ensemble of {len(members)} polyemo models.", "",
             f"- classes: {', '.join(classes)}", f"- rule: `{rule['rule']}` {params}",
             "- what the rule learned (on validation predictions only): "
             f"`{json.dumps({k: v for k, v in (rule.get('learned') or {}).items() if k not in ('coef', 'intercept')})}`",
             "", "## Members", "", "| member | encoder | head | scores |", "|---|---|---|---|"]
    for member in members:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in (member.get("scores") or {}).items())
        lines.append(f"| {member['name']} | {member['encoder']} | {member['head']} | {shown} |")
    if scores:
        lines += ["", "## Ensemble scores", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" for k, v in scores.items()]
    lines += ["", "Files of the ensemble and their SHA-256 are listed in `manifest.json`; each member bundle "
              "verifies itself. `polyemo.load()` verifies all of them.", ""]
    return "\n".join(lines)


def export_ensemble_bundle(target: str | os.PathLike[str], members: Mapping[str, str | os.PathLike[str]],
                           rule: Mapping[str, Any], *, name: str, scores: Mapping[str, float] | None = None,
                           member_scores: Mapping[str, Mapping[str, float]] | None = None, description: str = "",
                           info: Mapping[str, Any] | None = None, overwrite: bool = False) -> Path:
    """Write an ensemble bundle at ``target`` atomically: the member bundles (copied, verified
    first) and ``rule`` (a fitted :meth:`polyemo.ensemble.Rule.state` naming the members in
    order). Members must predict the same classes."""
    target = Path(target)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target}: already exists (pass overwrite=True to replace it)")
    order = [str(m) for m in rule.get("members", [])]
    if sorted(order) != sorted(members):
        raise ValueError(f"the rule's members {order} differ from the bundles given {sorted(members)}")
    parsed = {m: read_bundle(members[m]) for m in order}
    classes = list(parsed[order[0]].labels.classes)
    for m, bundle in parsed.items():
        if sorted(bundle.labels.classes) != sorted(classes):
            raise BundleError(bundle.path, LABELS, f"classes {bundle.labels.classes} differ from {order[0]}'s {classes}")
    if int(rule.get("num_classes") or 0) != len(classes):
        raise ValueError(f"the rule was fitted on {rule.get('num_classes')} classes, the members predict {len(classes)}")
    rows = [{"name": m, "folder": f"{ENSEMBLE_MEMBERS}/{m}", "encoder": b.config.features.encoder,
             "identity_key": b.config.features.identity.get("key"), "head": b.config.head.config.get("name"),
             "scores": dict((member_scores or {}).get(m) or b.config.card.scores)} for m, b in parsed.items()]
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        for m in order:
            shutil.copytree(parsed[m].path, staging / ENSEMBLE_MEMBERS / m)
        config = {"format": ENSEMBLE_FORMAT, "name": name, "classes": classes, "rule": dict(rule), "members": rows,
                  "scores": dict(scores or {}), "info": dict(info or {}),
                  "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        (staging / ENSEMBLE_CONFIG).write_text(json.dumps(config, indent=2, default=str) + "\n", encoding="utf-8")
        (staging / CARD).write_text(_ensemble_card(name, classes, dict(rule), rows, dict(scores or {}), description),
                                    encoding="utf-8")
        files = {f: {"sha256": sha256_file(staging / f), "bytes": (staging / f).stat().st_size}
                 for f in (ENSEMBLE_CONFIG, CARD)}
        (staging / MANIFEST).write_text(json.dumps({"format": ENSEMBLE_FORMAT, "files": files}, indent=2) + "\n",
                                        encoding="utf-8")
        staging.chmod(0o755)
        publish_folder(staging, target)  # the old bundle stays intact until the new one is complete
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def read_ensemble_bundle(path: str | os.PathLike[str]) -> EnsembleBundle:
    """Verify and parse an ensemble bundle (its files, then every member bundle)."""
    folder = Path(path)
    if not (folder / MANIFEST).is_file():
        raise BundleError(folder, MANIFEST, "missing: not a polyemo ensemble bundle or an incomplete copy")
    manifest = _read_json(folder, MANIFEST)
    if not isinstance(manifest, dict) or manifest.get("format") != ENSEMBLE_FORMAT:
        raise BundleError(folder, MANIFEST, f"not a {ENSEMBLE_FORMAT} manifest")
    for name in (ENSEMBLE_CONFIG, CARD):
        entry = (manifest.get("files") or {}).get(name)
        if entry is None:
            raise BundleError(folder, name, "not listed in manifest.json")
        if not (folder / name).is_file():
            raise BundleError(folder, name, "missing (listed in manifest.json)")
        if sha256_file(folder / name) != entry.get("sha256"):
            raise BundleError(folder, name, "SHA-256 mismatch: the file was modified or corrupted")
    config = _read_json(folder, ENSEMBLE_CONFIG)
    try:
        rows, rule, classes = config["members"], config["rule"], list(config["classes"])
        order = [str(r["name"]) for r in rows]
    except (KeyError, TypeError) as exc:
        raise BundleError(folder, ENSEMBLE_CONFIG, f"invalid ensemble config: {exc}") from exc
    if order != [str(m) for m in rule.get("members", [])]:
        raise BundleError(folder, ENSEMBLE_CONFIG, f"members {order} differ from the rule's {rule.get('members')}")
    members = {}
    for row in rows:
        member = folder / row["folder"]
        if member.resolve().parent != (folder / ENSEMBLE_MEMBERS).resolve():
            raise BundleError(folder, ENSEMBLE_CONFIG, f"member folder {row['folder']!r} is outside {ENSEMBLE_MEMBERS}/")
        members[row["name"]] = read_bundle(member)
    return EnsembleBundle(path=folder, name=str(config.get("name", folder.name)), classes=classes, rule=rule,
                          members=members, info=config, card_markdown=(folder / CARD).read_text(encoding="utf-8"))


def add_adaptation_state(path: str | os.PathLike[str], spec: AdaptationSpec, arrays: Mapping[str, np.ndarray],
                         section: str | None = None) -> Bundle:
    """Give an existing bundle (one exported before issue 12) its adaptation state, in place.

    ``arrays``: ``source_prior`` (C,) and ``feature_mean`` / ``feature_std`` (L, D), computed on
    the bundle's own training rows (:func:`polyemo.predict.adapt.adaptation_state_of`). The
    weights, normaliser and labels are untouched; config.json gains ``adaptation``, the card
    the ``section`` text (under "Test-time adaptation"), manifest.json the new file. The folder
    is rebuilt beside the old one and swapped in only when complete."""
    import safetensors.torch
    import torch

    bundle = read_bundle(path)
    target = Path(path)
    classes, shape = len(bundle.labels.classes), (bundle.config.head.num_layers, bundle.config.head.feature_dim)
    prior = np.asarray(arrays["source_prior"], dtype=np.float64)
    if prior.shape != (classes,) or not np.isfinite(prior).all() or abs(prior.sum() - 1) > 1e-4:
        raise ValueError(f"{target}: source_prior must be a distribution over the {classes} classes")
    for name in ("feature_mean", "feature_std"):
        if np.shape(arrays[name]) != shape:
            raise ValueError(f"{target}: {name} must have shape {shape} (layers, dim), got {np.shape(arrays[name])}")
    config = bundle.config.model_copy(update={"adaptation": spec})
    card = config.card
    if section:
        card = card.model_copy(update={"sections": {**card.sections, "Test-time adaptation": section}})
        config = config.model_copy(update={"card": card})
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        listed = _read_json(target, MANIFEST)["files"]  # read_bundle above verified every file
        for name in (HEAD, LABELS, NORMALISATION, METRICS, *[n for n in listed if n not in BUNDLE_FILES]):
            shutil.copy2(target / name, staging / name)
        (staging / CONFIG).write_text(json.dumps(config.model_dump(mode="json"), indent=2, ensure_ascii=False,
                                                 default=str) + "\n", encoding="utf-8")
        (staging / CARD).write_text(card.markdown(config, bundle.labels, bundle.dimensions), encoding="utf-8")
        tensors = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in arrays.items()}
        safetensors.torch.save_file(tensors, str(staging / ADAPTATION), metadata={"format": BUNDLE_FORMAT})
        names = sorted({*BUNDLE_FILES, *(p.name for p in staging.iterdir())})
        manifest = {"format": BUNDLE_FORMAT,
                    "files": {name: {"sha256": sha256_file(staging / name), "bytes": (staging / name).stat().st_size}
                              for name in names}}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        for item in staging.iterdir():
            item.chmod(0o644)
        staging.chmod(0o755)
        publish_folder(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return read_bundle(target)
