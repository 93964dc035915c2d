"""The experiment configuration: one YAML file, validated with pydantic.

Example (every field but ``corpora`` has a default)::

    name: emodb-loso
    corpora: [emodb]               # names (recipe + root), {name, root}, or {manifest: path}
    corpora_root: ../shared/corpora  # optional; default :func:`default_corpora_root`
    target: label                  # or arousal_level (baved)
    labels: ekman7                 # named set (native: each corpus' own classes, the default of
                                   # in-corpus protocols), or {base: big4, merges: {calm: neutral}}
    protocol: {name: loso, params: {}}
    encoder: {name: whisper-base, precision: fp32, layers: all, select: none}
    features: pooled               # or frames
    head: {name: logreg, params: {C: [0.1, 1.0]}}
    loss: ce                       # or {name: weighted_focal, params: {gamma: 2}}
    normalisation: global          # none | global | utterance | test-speaker (alias speaker) |
                                   # enrolled-speaker, or {name: enrolled-speaker, enrol: 5}
    training: {epochs: 30, lr: 0.001}
    seed: 0
    limit: {per_corpus: 40}        # smoke tests: at most N utterances per corpus / per speaker
    metrics: {primary: ua, n_boot: 1000}

Relative paths are resolved against the YAML file's folder. Errors name the YAML file and
the field (``exp.yaml: encoder.layers: ...``).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from polyemo.augment import AugmentSpec
from polyemo.experiment.loading import (  # noqa: F401  (re-exported: they used to live here)
    CORPORA_ENV,
    ConfigError,
    _resolve_paths,
    deep_merge,
    default_corpora_root,
    format_validation_error,
    read_yaml,
    set_path,
)
from polyemo.experiment.specs import FinalModelSpec, SelectSpec
from polyemo.experiment.dimensions import DimensionsSpec, expand_target  # noqa: E402  (issue 13)
from polyemo.experiment.text_spec import TextSpec  # noqa: E402  (issue 13)
from polyemo.experiment.adaptation_spec import AdaptationRunSpec  # noqa: E402  (issue 12)

#: environment variables naming the folder that holds ``<corpus>/`` subfolders
#: the categorical targets an experiment can predict
TARGETS = ("label", "arousal_level")
AROUSAL_LEVELS = ("low", "neutral", "high")
BEST_ON_VALIDATION = "best-on-validation"
#: protocols that train and test within each corpus: their default label set is ``native``
#: (every corpus scored on its own classes, as EmoBox does). The multi-corpus protocols
#: (cross_corpus, leave_one_language_out, leave_one_corpus_out) keep ``all``, the union of
#: the corpora's classes with per-corpus masks; a recipe comparing corpora should name its set.
NATIVE_PROTOCOLS = ("loso", "speaker_kfold", "official", "emobox_rule", "emobox_coverage", "emobox_official")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _RegisteredSpec(_Strict):
    """A name from one of polyemo's registries plus its parameters; a bare string is the name."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    _kind: ClassVar[str]  # what the name is, in error messages

    @classmethod
    def _registry(cls):  # the stage's Registry, imported lazily (keeps config import cheap)
        raise NotImplementedError

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        registry = cls._registry()
        if name not in registry:
            raise ValueError(f"unknown {cls._kind} {name!r}; known: {', '.join(registry.names())}")
        return name


class CorpusSpec(_Strict):
    """One corpus: a recipe ``name`` (with an optional ``root``), or a prepared ``manifest``."""

    name: str | None = None
    root: Path | None = None
    manifest: Path | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check(self) -> CorpusSpec:
        if (self.name is None) == (self.manifest is None):
            raise ValueError("give a corpus either a recipe 'name' (optionally with 'root') or a 'manifest' path")
        if self.manifest is not None and self.root is not None:
            raise ValueError("'root' applies to recipes; a 'manifest' already names its audio paths")
        if self.name is not None:
            from polyemo.corpora import RECIPES

            if self.name not in RECIPES:
                raise ValueError(f"unknown corpus recipe {self.name!r}; known: {', '.join(RECIPES.names())}")
        return self

    @property
    def label(self) -> str:
        return self.name if self.name is not None else Path(self.manifest).stem


class ProtocolSpec(_RegisteredSpec):
    """A split protocol of :mod:`polyemo.splits` and its parameters."""

    name: str = "emobox"
    _kind = "protocol"

    @classmethod
    def _registry(cls):
        from polyemo.splits import PROTOCOLS

        return PROTOCOLS

    @property
    def canonical(self) -> str:
        """The registered name (aliases such as ``lolo`` resolved)."""
        from polyemo.splits import PROTOCOLS

        target = PROTOCOLS.get(self.name)
        for name in PROTOCOLS.names():
            if PROTOCOLS.get(name) is target:
                return name
        return self.name


class EncoderSpec(_Strict):
    """The frozen encoder, which of its layers to read, and how to choose among them.

    ``layers``: ``"all"`` or a list of indices (0 = input embedding for transformers).
    ``select: best-on-validation`` picks ONE of those layers per fold by the validation
    score of the head trained on the training part; the test part plays no role.
    ``layers: best-on-validation`` is short for ``layers: all`` + that selection.
    """

    name: str = "whisper-base"
    precision: str | None = None
    layers: list[int] | Literal["all"] = "all"
    select: Literal["none", "best-on-validation"] = "none"
    options: dict[str, Any] = Field(default_factory=dict)
    workers: int = Field(1, ge=1)
    batch_seconds: float = Field(60.0, gt=0)
    frame_dtype: Literal["float16", "float32"] = "float16"
    cache_dir: Path | None = None
    #: training rows also get features of augmented copies of their audio (polyemo.augment;
    #: each copy cached once); validation and test rows never do
    augment: AugmentSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"name": value}
        if isinstance(value, dict) and value.get("layers") == BEST_ON_VALIDATION:
            value = {**value, "layers": "all", "select": BEST_ON_VALIDATION}
        return value

    @field_validator("layers")
    @classmethod
    def _layers(cls, layers: list[int] | str) -> list[int] | str:
        if isinstance(layers, list):
            if not layers:
                raise ValueError("give at least one layer, or 'all'")
            if len(set(layers)) != len(layers):
                raise ValueError(f"layers repeat: {layers}")
        return layers

    @field_validator("precision")
    @classmethod
    def _precision(cls, precision: str | None) -> str | None:
        # None and "auto" both mean: bf16 where the hardware computes it natively, else fp32
        # (polyemo.encoders.precision); the run's cache key and bundle record the resolved one.
        allowed = ("auto", "fp32", "bf16", "int8")
        if precision is not None and precision not in allowed:
            raise ValueError(f"precision must be one of {', '.join(allowed)}, got {precision!r}")
        return precision

    def encoder_options(self) -> dict[str, Any]:
        options = dict(self.options)
        if self.precision is not None:
            options["precision"] = self.precision
        return options


class HeadSpec(_RegisteredSpec):
    """A head of :data:`polyemo.heads.HEADS`, its parameters and how loaded layers combine."""

    name: str = "linear"
    _kind = "head"
    layers: Literal["weighted", "mean", "concat"] | None = None
    layer_norm: bool = False

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"name": value}
        if isinstance(value, dict) and isinstance(value.get("layers"), int):
            raise ValueError("head.layers combines the loaded layers (weighted, mean, concat); "
                             "to use one layer set encoder.layers: [index]")
        return value

    @classmethod
    def _registry(cls):
        from polyemo.heads import HEADS

        return HEADS

    def head_config(self):
        from polyemo.heads.model import HeadConfig

        return HeadConfig(name=self.name, params=self.params, layers=self.layers, layer_norm=self.layer_norm)


class LossSpec(_RegisteredSpec):
    """A loss of :data:`polyemo.losses.LOSSES` and its parameters."""

    name: str = "ce"
    _kind = "loss"

    @classmethod
    def _registry(cls):
        from polyemo.losses import LOSSES

        return LOSSES


class LimitSpec(_Strict):
    """Keep at most ``per_corpus`` utterances of each corpus and ``per_speaker`` of each
    speaker, spread over speakers and classes, drawn with the seed (smoke tests)."""

    per_corpus: int | None = Field(None, ge=1)
    per_speaker: int | None = Field(None, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"per_corpus": value} if isinstance(value, int) and not isinstance(value, bool) else value

    @property
    def active(self) -> bool:
        return self.per_corpus is not None or self.per_speaker is not None


class MetricsSpec(_Strict):
    primary: Literal["ua", "wa", "macro_f1"] = "ua"
    n_boot: int = Field(1000, ge=0)
    alpha: float = Field(0.05, gt=0, lt=1)
    #: resample whole speakers (cluster bootstrap) or single utterances
    bootstrap_unit: Literal["speaker", "utterance"] = "speaker"


# Fields of TrainConfig set elsewhere in the experiment file.
_TRAINING_OWNED = {"loss", "loss_params", "normalisation", "seed", "log_path", "checkpoint_path"}


class ExperimentConfig(_Strict):
    """One experiment: data, target, protocol, encoder, head, loss, training, seed."""

    name: str = "experiment"
    corpora: list[CorpusSpec]
    corpora_root: Path | None = None
    target: Literal["label", "arousal_level"] = "label"
    labels: str | dict[str, Any] | None = None
    protocol: ProtocolSpec = Field(default_factory=ProtocolSpec)
    encoder: EncoderSpec = Field(default_factory=EncoderSpec)
    #: ``audio``: decoded clips for an estimator that trains the encoder (head ``finetune``);
    #: ``lm``: texts (+ speech tokens) for the language-model heads (polyemo.experiment.lm_inputs)
    features: Literal["pooled", "frames", "audio", "lm"] = "pooled"
    head: HeadSpec = Field(default_factory=HeadSpec)
    loss: LossSpec = Field(default_factory=LossSpec)
    #: see polyemo.train.normalise; ``speaker`` is read as ``test-speaker``; enrolled-speaker's
    #: clips per speaker are ``training.enrol_clips`` (or ``{name: enrolled-speaker, enrol: k}``)
    normalisation: Literal["none", "global", "utterance", "test-speaker", "enrolled-speaker",
                           "corpus-standardised", "speaker-standardised"] = "none"
    training: dict[str, Any] = Field(default_factory=dict)
    seed: int = 0
    limit: LimitSpec = Field(default_factory=LimitSpec)
    metrics: MetricsSpec = Field(default_factory=MetricsSpec)
    #: also train a deployable model on every row of the run (``<run>/final/``, for ``polyemo export``):
    #: true, or the model card's text {name, description, license, limitations}; see polyemo.experiment.final
    final_model: bool | dict[str, Any] = False
    #: candidate settings chosen inside each fold's training data (validation speakers or an
    #: inner protocol over the training rows); see polyemo.experiment.selection
    select: SelectSpec | None = None
    #: dimensional targets (``target: dimensions``; see polyemo.experiment.dimensions)
    dimensions: DimensionsSpec | None = None
    #: a transcript branch fused with the speech features (see polyemo.experiment.text_spec)
    text: TextSpec | None = None
    #: test-time adapters scored beside the plain model, settings by an inner protocol (issue 12;
    #: see polyemo.experiment.adaptation_spec)
    adaptation: AdaptationRunSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _dimensions_target(cls, data: Any) -> Any:
        """``target: dimensions`` -> its class column as ``target``, the head's attributes and scale."""
        return expand_target(data) if isinstance(data, dict) else data

    @model_validator(mode="before")
    @classmethod
    def _normalisation_spec(cls, data: Any) -> Any:
        """``speaker`` -> ``test-speaker``; ``{name: enrolled-speaker, enrol: k}`` -> the name and
        ``training.enrol_clips: k`` (one place for k, whichever way it is written)."""
        if not isinstance(data, dict) or "normalisation" not in data:
            return data
        value = data["normalisation"]
        if isinstance(value, dict):
            value = dict(value)
            if "name" not in value or set(value) - {"name", "enrol"}:
                raise ValueError("normalisation: give a name, or {name: enrolled-speaker, enrol: <clips per speaker>}")
            if "enrol" in value:
                if value["name"] != "enrolled-speaker":
                    raise ValueError(f"normalisation: 'enrol' applies to enrolled-speaker, not {value['name']!r}")
                training = dict(data.get("training") or {})
                training["enrol_clips"] = value["enrol"]
                data = {**data, "training": training}
            value = value["name"]
        return {**data, "normalisation": "test-speaker" if value == "speaker" else value}

    @field_validator("corpora", mode="before")
    @classmethod
    def _corpora_list(cls, value: Any) -> Any:
        if isinstance(value, (str, dict)):
            value = [value]
        if isinstance(value, list) and not value:
            raise ValueError("name at least one corpus")
        return value

    @field_validator("training")
    @classmethod
    def _training(cls, value: dict[str, Any]) -> dict[str, Any]:
        from polyemo.train.config import TrainConfig

        owned = sorted(set(value) & _TRAINING_OWNED)
        if owned:
            raise ValueError(f"{owned} are set by the experiment's own fields (loss, normalisation, seed), not under training")
        TrainConfig(**value)  # raises with the field name
        return value

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: Any, info: ValidationInfo) -> Any:
        if info.data.get("target") == "arousal_level":
            if value is not None:
                raise ValueError("target arousal_level has its own classes (low, neutral, high); drop 'labels'")
            return value
        from polyemo.labels import label_set

        try:
            label_set(value if value is not None else "all")
        except ValidationError as error:
            raise ValueError("; ".join(e["msg"].removeprefix("Value error, ") for e in error.errors())) from None
        except (KeyError, ValueError) as error:
            raise ValueError(error.args[0] if error.args else str(error)) from None
        return value

    @field_validator("head")
    @classmethod
    def _head_takes_features(cls, head: HeadSpec, info: ValidationInfo) -> HeadSpec:
        from polyemo.heads import HEADS
        from polyemo.heads.model import head_input_kind

        features = info.data.get("features")
        kind = head_input_kind(head.name, head.params)
        kind = getattr(HEADS.get(head.name), "features", kind)  # a head may read other rows than its tensors (lm)
        if features is not None and kind != features:
            raise ValueError(f"head {head.name!r} takes {kind} features but 'features' is {features!r}")
        return head

    @field_validator("final_model")
    @classmethod
    def _final_model(cls, value: bool | dict[str, Any]) -> bool | dict[str, Any]:
        return FinalModelSpec.check(value)

    @model_validator(mode="after")
    def _finetune_encoder(self) -> ExperimentConfig:
        """``features: audio`` (fine-tuning): the encoder the head trains is ``encoder.name``
        (always written into the head's params, so one name says it and ``--encoder`` changes
        both); no layer choice outside the head."""
        if self.features != "audio":
            return self
        if self.encoder.layers != "all" or self.encoder.select != "none":
            raise ValueError("features: audio trains the encoder: choose its layer with head.params.layer, "
                             "not encoder.layers / encoder.select")
        self.head.params = {**self.head.params, "encoder": self.encoder.name}
        return self

    @field_validator("corpora")
    @classmethod
    def _distinct(cls, corpora: list[CorpusSpec]) -> list[CorpusSpec]:
        names = [c.label for c in corpora]
        if len(set(names)) != len(names):
            raise ValueError(f"corpora repeat: {names}")
        return corpora

    # --- derived settings ------------------------------------------------------------
    def label_set(self):
        """The LabelSet of a ``label`` target; without ``labels``: ``native`` (each corpus' own
        classes) for the in-corpus protocols (:data:`NATIVE_PROTOCOLS`), ``all`` for the others."""
        from polyemo.labels import label_set

        return label_set(self.labels if self.labels is not None else self.default_labels())

    def default_labels(self) -> str:
        """The label set used when ``labels`` is not set (see :meth:`label_set`)."""
        return "native" if self.protocol.canonical in NATIVE_PROTOCOLS else "all"

    def train_config(self, **updates: Any):
        from polyemo.train.config import TrainConfig

        values = {**self.training, "loss": self.loss.name, "loss_params": self.loss.params,
                  "normalisation": self.normalisation, "seed": self.seed, **updates}
        return TrainConfig(**values)

    def resolved(self) -> dict[str, Any]:
        """JSON-ready dict of the whole configuration."""
        return self.model_dump(mode="json")

    def fingerprint(self) -> str:
        """Hash of everything that changes the results (progress and cache locations excluded)."""
        data = self.resolved()
        data.pop("name", None)
        data.pop("final_model", None)  # an extra output: the folds' results do not depend on it
        if data.get("adaptation") is None:  # runs without adapters keep their fingerprints
            data.pop("adaptation", None)
        data["encoder"].pop("cache_dir", None)
        if data["encoder"].get("augment") is None:  # configs without augmentation keep their fingerprints
            data["encoder"].pop("augment", None)
        data["encoder"].pop("workers", None)
        data["encoder"].pop("batch_seconds", None)
        data["training"] = {k: v for k, v in data["training"].items() if k not in ("show_progress", "device")}
        blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def experiment_from_dict(
    data: dict[str, Any],
    source: str = "experiment",
    base: Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> ExperimentConfig:
    """Validate a mapping (``overrides``: dotted keys, e.g. ``{"training.epochs": 1}``)."""
    data = copy.deepcopy(data)
    for key, value in (overrides or {}).items():
        set_path(data, key, value)
    data = _resolve_paths(data, base)
    try:
        return ExperimentConfig(**data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, source)) from None


def load_experiment(
    source: str | os.PathLike[str] | dict[str, Any] | ExperimentConfig,
    overrides: dict[str, Any] | None = None,
) -> ExperimentConfig:
    """An :class:`ExperimentConfig` from a YAML path, a mapping, or a config (``overrides``
    applied; the default ``name`` is the YAML file's stem)."""
    if isinstance(source, ExperimentConfig):
        if not overrides:
            return source
        return experiment_from_dict(source.resolved(), "experiment", None, overrides)
    if isinstance(source, dict):
        return experiment_from_dict(source, "experiment", None, overrides)
    path = Path(source)
    data = read_yaml(path)
    data.setdefault("name", path.stem)
    return experiment_from_dict(data, str(path), path.resolve().parent, overrides)
