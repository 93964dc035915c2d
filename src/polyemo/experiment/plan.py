"""The plan of a run: what the configuration resolves to, once, before any fold is trained.

The configuration names corpora, a target, a protocol and an encoder; the plan holds what
they come to on today's data:

- the feature request (:class:`FeatureRequest`: encoder, its options, layers, kind), which
  :mod:`polyemo.experiment.inputs` serves;
- the rows (the experiment's manifest, less the rows the inputs cannot serve), its classes
  (label-set order, present in the data) and the split (saved with its hash in ``split/``;
  a resumed run verifies it).

:func:`resolve_plan` writes it to ``plan.json`` in the run folder. The final model
(:mod:`polyemo.experiment.final`) reuses the same request and rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel

from polyemo.experiment.config import ExperimentConfig
from polyemo.experiment.data import TARGET_COLUMN, classes_of
from polyemo.experiment.errors import ExperimentError
from polyemo.io import write_json

PLAN_FILE = "plan.json"


class FeatureRequest(BaseModel):
    """What the experiment's inputs must provide: one encoder's features of every row."""

    encoder: str
    options: dict[str, Any]
    #: encoder layers to read (None: all of them)
    layers: list[int] | None
    kind: str
    cache_dir: Path | None = None
    workers: int = 1
    batch_seconds: float = 60.0
    frame_dtype: str = "float16"
    #: dimensional targets the rows carry (``DimensionsSpec`` as a dict; issue 13)
    dimensions: dict[str, Any] | None = None
    #: the text branch of speech + text inputs (``TextSpec`` as a dict; issue 13)
    text: dict[str, Any] | None = None
    #: augmented copies for training rows (``AugmentSpec`` as a dict; issue 12)
    augment: dict[str, Any] | None = None

    @classmethod
    def of(cls, config: ExperimentConfig) -> FeatureRequest:
        encoder = config.encoder
        return cls(encoder=encoder.name, options=encoder.encoder_options(),
                   layers=None if encoder.layers == "all" else list(encoder.layers), kind=config.features,
                   cache_dir=encoder.cache_dir, workers=encoder.workers, batch_seconds=encoder.batch_seconds,
                   frame_dtype=encoder.frame_dtype,
                   dimensions=None if config.dimensions is None else config.dimensions.model_dump(mode="json"),
                   text=None if config.text is None else config.text.model_dump(mode="json"),
                   augment=None if encoder.augment is None else encoder.augment.model_dump(mode="json"))


@dataclass
class ExperimentPlan:
    """A configuration resolved on its data: rows, classes, split and feature request."""

    config: ExperimentConfig
    manifest: pd.DataFrame
    classes: list[str]
    split: Any  # polyemo.splits.Split
    features: FeatureRequest

    def record(self) -> dict[str, Any]:
        """JSON-ready summary (``plan.json``): what every fold and the final model work from."""
        from polyemo.splits.model import manifest_sha256

        return {
            "experiment": self.config.name, "fingerprint": self.config.fingerprint(),
            "target": self.config.target, "classes": list(self.classes),
            "n_rows": len(self.manifest), "manifest_sha256": manifest_sha256(self.manifest),
            "corpora": sorted(self.manifest["corpus"].astype(str).unique()),
            "split": {"protocol": self.split.protocol, "sha256": self.split.sha256,
                      "folds": [f.name for f in self.split.folds]},
            "features": self.features.model_dump(mode="json"),
        }


def make_experiment_split(config: ExperimentConfig, manifest: pd.DataFrame):
    """The protocol's folds over the experiment's rows (label column ``target``).

    The EmoBox protocols (``emobox_official``, ``emobox_rule``, ``emobox_coverage``) split
    each corpus on its own themselves (fold names ``<corpus>.fold_<k>``);
    ``cross_corpus`` defaults to every ordered pair of the experiment's corpora.
    """
    from polyemo.splits import SplitError, make_split

    protocol = config.protocol.canonical
    params = dict(config.protocol.params)
    corpora = sorted(manifest["corpus"].unique())
    try:
        if protocol == "cross_corpus":
            params.setdefault("train", corpora)
            params.setdefault("test", corpora)
        return make_split(manifest, protocol, label_column=TARGET_COLUMN, seed=config.seed, **params)
    except SplitError as error:
        raise ExperimentError(f"experiment {config.name!r}: cannot split with {protocol}: {error}") from None


def saved_or_new_split(out_dir: Path, config: ExperimentConfig, manifest: pd.DataFrame):
    """The split saved in ``out_dir/split`` (verified to be the one made now), or the new one, saved."""
    from polyemo.splits import Split, SplitIntegrityError

    split = make_experiment_split(config, manifest)
    folder = out_dir / "split"
    if (folder / "split.json").exists():
        try:
            saved = Split.load(folder)
        except SplitIntegrityError as error:
            raise ExperimentError(f"{folder}: {error}; remove the run folder or run with fresh=True") from None
        if saved.sha256 != split.sha256:
            raise ExperimentError(
                f"{folder}: the saved split differs from the one this configuration makes now (the data "
                "changed?); its finished folds would not match; rerun with fresh=True (--fresh)")
        return saved
    split.save(folder)
    return split


def experiment_classes(config: ExperimentConfig, manifest: pd.DataFrame) -> list[str]:
    """The experiment's classes on these rows; at least two."""
    classes = classes_of(config, manifest)
    if len(classes) < 2:
        raise ExperimentError(f"experiment {config.name!r}: the data has fewer than two classes ({classes})")
    return classes


def resolve_plan(config: ExperimentConfig, out_dir: Path, manifest: pd.DataFrame,
                 features: FeatureRequest) -> ExperimentPlan:
    """The plan of a run over ``manifest`` (the rows its inputs serve), saved as ``plan.json``."""
    classes = experiment_classes(config, manifest)
    split = saved_or_new_split(out_dir, config, manifest)
    plan = ExperimentPlan(config=config, manifest=manifest, classes=classes, split=split, features=features)
    write_json(out_dir / PLAN_FILE, plan.record())
    return plan
