"""The deployable model of an experiment: one estimator trained on every row of the run.

A run's folds measure how well the recipe works; none of their models saw all the data.
With ``final_model`` set in the experiment file, :func:`train_final_model` (called by
:func:`~polyemo.experiment.run.run_experiment` once the folds are done) trains the recipe
once more on all of the run's rows (its plan's rows and inputs, never a second encoder) -- validation is still carved from their speakers, for
the checkpoint, ``C`` and the layer choice -- and keeps it in ``<run>/final/``::

    estimator/          the fitted estimator (:meth:`polyemo.train.Estimator.save`)
    training_log.jsonl  the validation curve (torch heads)
    final.json          :class:`FinalModelInfo`: encoder identity and layers, classes, data,
                        validation speakers and scores (written last: the model is complete)

``polyemo export <run> <bundle>`` (:func:`polyemo.experiment.export.export_run`) turns it
into a bundle. ``final_model`` is ``true`` or the model card's text::

    final_model:
      name: polyemo-default
      description: ...
      license: ...
      limitations: ...

A finished final model is reused while the configuration (fingerprint), the encoder and
the run's rows are unchanged.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from polyemo.experiment.config import ExperimentConfig
from polyemo.experiment.data import TARGET_COLUMN, classes_of
from polyemo.experiment.errors import ExperimentError
from polyemo.experiment.inputs import InputProvider, load_inputs
from polyemo.experiment.selection import fit_on_training
from polyemo.experiment.specs import FinalModelSpec
from polyemo.io import publish_folder, write_json

if TYPE_CHECKING:
    from polyemo.train import Estimator

FINAL_DIR = "final"
INFO_FILE = "final.json"
ESTIMATOR_DIR = "estimator"
FORMAT = "polyemo-final-model/1"


class FinalModelInfo(BaseModel):
    """What ``final/final.json`` records about a final model."""

    format: str = FORMAT
    experiment: str
    fingerprint: str
    manifest_sha256: str
    encoder: str
    identity: dict[str, Any] = Field(description="EncoderIdentity.as_dict() of the features")
    encoder_layers: list[int] = Field(description="encoder layers of the features the estimator reads, in order")
    features: str
    target: str
    classes: list[str]
    label_set: dict[str, Any] | None = Field(None, description="LabelSet of a 'label' target, limited to the classes")
    corpora: list[str]
    languages: list[str]
    n_train: int
    n_validation: int
    validation_speakers: list[str]
    selected_layer: int | None = None
    layer_scores: dict[str, float] = Field(default_factory=dict)
    validation: dict[str, float | None] = Field(default_factory=dict)
    best_epoch: int | None = None
    seconds: float = 0.0
    card: FinalModelSpec = Field(default_factory=FinalModelSpec)
    #: how ``select``'s candidate was chosen (SelectionRecord), None when the config has no select
    selection: dict[str, Any] | None = None
    #: the settings the model was trained with after every choice (normalisation, head, loss, layers)
    chosen: dict[str, Any] = Field(default_factory=dict)
    #: what the refit on training + validation fixed (None: fitted on the training part only)
    refit: dict[str, Any] | None = None


def final_dir(run_dir: str | os.PathLike[str]) -> Path:
    return Path(run_dir) / FINAL_DIR


def read_final_info(run_dir: str | os.PathLike[str]) -> FinalModelInfo | None:
    """The final model's record in a run folder, or None when it has none (or an unreadable one)."""
    path = final_dir(run_dir) / INFO_FILE
    if not path.is_file():
        return None
    try:
        return FinalModelInfo.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def load_final_model(run_dir: str | os.PathLike[str]) -> tuple[Estimator, FinalModelInfo]:
    """The fitted estimator and its record from ``<run>/final/``."""
    from polyemo.train import load_estimator

    info = read_final_info(run_dir)
    if info is None:
        raise FileNotFoundError(
            f"{final_dir(run_dir)}: no final model (set 'final_model: true' in the experiment file and run it again)")
    return load_estimator(final_dir(run_dir) / ESTIMATOR_DIR), info


def _limited_label_set(config: ExperimentConfig, classes: list[str]) -> dict[str, Any] | None:
    """The experiment's label set restricted to the classes the data has (merges into them kept)."""
    if config.target != "label":
        return None
    labels = config.label_set()
    if labels.classes != classes:
        labels = labels.model_copy(update={
            "classes": list(classes), "merges": {k: v for k, v in labels.merges.items() if v in classes}})
    return labels.model_dump(mode="json")


def _chosen_settings(config: ExperimentConfig) -> dict[str, Any]:
    data = config.resolved()
    return {"normalisation": data["normalisation"], "head": data["head"], "loss": data["loss"],
            "layers": data["encoder"]["layers"], "layer_select": data["encoder"]["select"]}


def train_final_model(config: ExperimentConfig, run_dir: str | os.PathLike[str],
                      inputs: InputProvider | None = None, *, progress: bool = False) -> FinalModelInfo | None:
    """Train the experiment's final model on all its rows into ``<run>/final/`` (see the module).

    Returns None when the experiment asks for none. ``inputs``: the run's own
    :class:`~polyemo.experiment.inputs.InputProvider` (its rows are the experiment's, after
    its limits and without rows the encoder failed on: the same as the folds'); without it
    (a finished run asked again) they are loaded through the same plan and inputs code, with
    the process' shared encoder. Validation: about ``validation_fraction`` of the speakers
    (whole speaker / identical-recording groups, covering every class and corpus it can),
    used for every choice; the estimator is trained on the rest.
    """
    spec = FinalModelSpec.of(config)
    if spec is None:
        return None
    from polyemo.splits.core import carve_validation, labelled_rows, rng_for
    from polyemo.splits.model import manifest_sha256

    started = time.perf_counter()
    run_dir = Path(run_dir)
    if inputs is None:
        inputs = load_inputs(config, progress=progress)
    manifest = inputs.manifest
    digest = manifest_sha256(manifest)

    previous = read_final_info(run_dir)
    if (previous is not None and previous.fingerprint == config.fingerprint() and previous.manifest_sha256 == digest
            and previous.identity.get("key") == inputs.identity.get("key") and previous.card == spec
            and (final_dir(run_dir) / ESTIMATOR_DIR / "estimator.json").is_file()):
        return previous

    classes = classes_of(config, manifest)
    rows = labelled_rows(manifest, TARGET_COLUMN)
    train_rows, val_rows = carve_validation(rows, TARGET_COLUMN, spec.validation_fraction, rng_for(config.seed))
    if val_rows.empty:
        raise ExperimentError(f"experiment {config.name!r}: the final model needs a validation set, "
                              "but the data has fewer than two speakers")

    # Everything goes to a staging folder first: an old final model stays until the new one is whole.
    run_dir.mkdir(parents=True, exist_ok=True)
    staging = run_dir / f".{FINAL_DIR}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        train_config = config.train_config(show_progress=progress, log_path=staging / "training_log.jsonl")
        # The same choices as every fold's, made on these rows alone: for the final model all
        # rows are training rows (an inner protocol in ``select`` runs over all of them).
        fitted = fit_on_training(config, train_rows, val_rows, inputs, classes, train_config)
        fitted.estimator.save(staging / ESTIMATOR_DIR)
        report = fitted.report
        info = FinalModelInfo(
            experiment=config.name, fingerprint=config.fingerprint(), manifest_sha256=digest,
            encoder=config.encoder.name, identity=dict(inputs.identity), encoder_layers=fitted.encoder_layers,
            features=config.features, target=config.target, classes=classes,
            label_set=_limited_label_set(config, classes),
            corpora=sorted(manifest["corpus"].astype(str).unique()),
            languages=sorted(manifest["language"].astype(str).unique()),
            n_train=len(train_rows), n_validation=len(val_rows),
            validation_speakers=sorted(val_rows["speaker"].astype(str).unique()),
            selected_layer=fitted.selected_layer, layer_scores=fitted.layer_scores,
            validation={k: (None if report.val_metrics.get(k) is None else float(report.val_metrics[k]))
                        for k in ("ua", "wa", "macro_f1")},
            best_epoch=report.best_epoch, seconds=round(time.perf_counter() - started, 3), card=spec,
            selection=None if fitted.selection is None else fitted.selection.model_dump(mode="json"),
            chosen=_chosen_settings(fitted.config), refit=fitted.refit,
        )
        write_json(staging / INFO_FILE, info.model_dump(mode="json"))
        publish_folder(staging, final_dir(run_dir))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return info
