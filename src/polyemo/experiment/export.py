"""From a finished run to a model bundle: ``polyemo export <run> <bundle>``.

:func:`export_run` takes a run folder (:func:`~polyemo.experiment.run.run_experiment`) or a
benchmark folder (:func:`~polyemo.experiment.bench.run_bench`, its runs in ``cells/``). The
model is the run's final model (``<run>/final/``, trained on all of the run's rows with
``final_model`` set, see :mod:`polyemo.experiment.final`); exactly one run of a benchmark
folder must have one. Every finished run in the folder contributes its cross-validated
scores to the model card and ``metrics.json``: per corpus for EmoBox folds, per held-out
language for leave-one-language-out, per test corpus otherwise.

Bundles hold safetensors weights only, so a scikit-learn logistic regression (a
StandardScaler and a multinomial LogisticRegression) is turned into the equivalent torch
``linear`` head by :func:`logreg_as_linear`: the scaler is folded into the weights,
``W' = W / s`` and ``b' = b - W' m``, so ``softmax(W' x + b')`` is the regression's
``predict_proba`` (to float32 rounding). Other classical heads (SVMs with Platt scaling)
have no such form and are refused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from polyemo.experiment.final import (
    final_dir,
    load_final_model,
    read_final_info,
)

from polyemo.experiment.card import (  # noqa: F401  (re-exported: the card used to live here)
    _runs,
    card_sections,
    choices_section,
    run_scores,
    training_section,
)
from polyemo.experiment.results import RUN_FILE, RunResult

if TYPE_CHECKING:
    from polyemo.train import Estimator, Trainer

RESULT_FILE = RUN_FILE


class ExportError(ValueError):
    """A run folder that cannot be exported (the message names the folder and what is missing)."""


# --- the head ---------------------------------------------------------------------------------

def logreg_as_linear(estimator: Estimator) -> Trainer:
    """A fitted torch :class:`~polyemo.train.Trainer` with a ``linear`` head that computes the
    same probabilities as a fitted logistic-regression :class:`~polyemo.train.classical.ClassicalEstimator`.

    The estimator's normaliser, layer choice and layer reduction are kept; the regression's
    own StandardScaler is folded into the linear layer. A binary regression (sigmoid of one
    score ``z``) becomes the two logits ``(-z/2, z/2)``.
    """
    import torch
    from sklearn.linear_model import LogisticRegression

    from polyemo.heads.model import HeadConfig
    from polyemo.train import Trainer

    head = getattr(estimator, "head", None)
    pipeline = getattr(head, "pipeline", None)
    if not getattr(estimator, "fitted", False) or pipeline is None:
        raise ValueError(f"{type(estimator).__name__} is not a fitted classical estimator")
    scaler, classifier = pipeline.named_steps["scale"], pipeline.named_steps["classify"]
    if not isinstance(classifier, LogisticRegression):
        raise TypeError(f"head {estimator.head_config.name!r} ({type(classifier).__name__}) has no linear-softmax "
                        "form and cannot be bundled; use logreg or a torch head")
    if classifier.solver == "liblinear":
        raise TypeError("a liblinear logistic regression is one-vs-rest, not a softmax over classes")
    present = [int(c) for c in classifier.classes_]
    if present != list(range(estimator.num_classes)):
        missing = [estimator.class_names[i] for i in range(estimator.num_classes) if i not in present]
        raise ValueError(f"classes {missing} never occurred in training; the model cannot predict them")

    coef = np.asarray(classifier.coef_, dtype=np.float64)
    intercept = np.asarray(classifier.intercept_, dtype=np.float64)
    if coef.shape[0] == 1:  # binary: P(class 1) = sigmoid(z) = softmax(-z/2, z/2)[1]
        coef, intercept = np.vstack([-coef / 2, coef / 2]), np.array([-intercept[0] / 2, intercept[0] / 2])
    mean = scaler.mean_ if scaler.with_mean else np.zeros(coef.shape[1])
    scale = scaler.scale_ if scaler.with_std else np.ones(coef.shape[1])
    weight = coef / scale
    bias = intercept - weight @ mean

    config = HeadConfig(name="linear", params={}, layers=estimator.head_config.layer_mode())
    train_config = estimator.train_config.model_copy(update={"log_path": None, "checkpoint_path": None,
                                                             "show_progress": False})
    trainer = Trainer(config, train_config, estimator.num_classes, estimator.class_names)
    trainer.normaliser = estimator.normaliser
    trainer.num_layers, trainer.feature_dim = estimator.num_layers, estimator.feature_dim
    model = trainer._build_model()
    linear = model.head.linear
    if tuple(linear.weight.shape) != weight.shape:
        raise ValueError(f"the linear head takes {tuple(linear.weight.shape)} weights; the regression has {weight.shape}")
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(weight))
        linear.bias.copy_(torch.from_numpy(bias))
    trainer.model = model.eval()
    trainer.fitted = True
    return trainer


def bundleable(estimator: Estimator) -> Trainer:
    """The estimator as a torch Trainer (classical logistic regression converted)."""
    if getattr(estimator, "kind", "") == "classical":
        return logreg_as_linear(estimator)
    return estimator


# --- export ------------------------------------------------------------------------------------------

def find_final_run(folder: str | os.PathLike[str]) -> Path:
    """The run folder (the folder itself or one benchmark cell) that holds the final model."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ExportError(f"{folder}: no such run folder")
    runs = _runs(folder)
    with_final = [run for run in runs if read_final_info(run) is not None]
    if not with_final:
        raise ExportError(f"{folder}: no final model in {'it' if runs == [folder] else 'any of its runs'} "
                          "(set 'final_model: true' in the experiment file and run it again)")
    if len(with_final) > 1:
        raise ExportError(f"{folder}: {len(with_final)} runs have a final model "
                          f"({', '.join(p.name for p in with_final)}); export one of them")
    return with_final[0]


def export_run(run: str | os.PathLike[str], bundle: str | os.PathLike[str], *, overwrite: bool = False,
               name: str | None = None) -> Path:
    """Write the bundle of a finished run (or benchmark) folder; returns the bundle path.

    The head, normaliser, encoder identity and layers come from the final model; the card
    and ``metrics.json`` from the final model's record, its ``final_model`` text (name,
    description, license, limitations) and the scores of every finished run in the folder.
    """
    from polyemo.bundle import ModelCard, export_estimator
    from polyemo.labels import LabelSet

    folder = Path(run)
    final_run = find_final_run(folder)
    estimator, info = load_final_model(final_run)
    label_set = info.label_set
    if info.target == "arousal_level" and label_set is None:  # BAVED's levels are classes too
        label_set = {"name": "arousal_level", "classes": list(info.classes)}
    if info.target not in ("label", "arousal_level") or label_set is None:
        raise ExportError(f"{final_dir(final_run)}: the model predicts {info.target!r}; bundles hold classes "
                          "(emotions or arousal levels) and dimensions")
    unfinished = [p.name for p in _runs(folder) if not (p / RESULT_FILE).is_file()]
    if unfinished:
        raise ExportError(f"{folder}: runs {unfinished} have not finished (no {RESULT_FILE}); run them to the end first")

    runs: dict[str, dict[str, Any]] = {}
    for path in _runs(folder):
        if (path / RESULT_FILE).is_file():
            runs[path.name] = run_scores(path, RunResult.load(path))
    headline, sections = card_sections(runs)
    sections["Training"] = training_section(info)
    fold_choices = {}
    for path in _runs(folder):
        for fold_file in sorted((path / "folds").glob("*/fold.json")):
            fold = json.loads(fold_file.read_text(encoding="utf-8"))
            if fold.get("selection"):
                fold_choices[f"{path.name}/{fold['name']}"] = fold
    if info.selection or info.refit or fold_choices:
        sections["How each choice was made"] = choices_section(info, fold_choices)
    spec = info.card
    card = ModelCard(
        name=name or spec.name or info.experiment,
        description=spec.description,
        corpora=info.corpora,
        languages=info.languages,
        protocol=", ".join(f"{scores['protocol']} ({run_id})" for run_id, scores in runs.items()),
        scores=headline,
        license=spec.license,
        limitations=spec.limitations,
        sections=sections,
        extra={"experiment": info.experiment, "fingerprint": info.fingerprint, "n_train": info.n_train,
               "n_validation": info.n_validation, "best_epoch": info.best_epoch},
    )
    metrics = {
        "final_model": {k: v for k, v in info.model_dump(mode="json").items() if k not in ("card", "validation_speakers")},
        "runs": runs,
        # each evaluation fold's own choice (inner scores, the groups it was scored on)
        "fold_choices": {name: {"test_groups": fold.get("info", {}).get("target"), **fold["selection"]}
                         for name, fold in fold_choices.items()},
    }
    adaptation = bundle_adaptation(folder, final_run, card, metrics)  # issue 12
    json.dumps(metrics)  # fails here, not half-way through writing, if something is not JSON
    return export_estimator(
        bundle, bundleable(estimator), encoder=info.encoder, identity=info.identity,
        labels=LabelSet(**label_set), card=card, encoder_layers=info.encoder_layers,
        metrics=metrics, overwrite=overwrite, adaptation=adaptation,
    )


def _run_path(folder: Path, run_id: str) -> Path:
    return next(path for path in _runs(folder) if path.name == run_id)


def bundle_adaptation(folder: Path, final_run: Path, card, metrics: dict[str, Any]):
    """The final model's adaptation state (``final/adaptation.json``, issue 12) as the bundle's
    :class:`~polyemo.bundle.AdaptationSpec` and arrays (None for a run without one), and each
    run's adapted scores (``adaptation.json``) on the card: plain first, then every adapter."""
    from polyemo.bundle import AdaptationSpec
    from polyemo.experiment.adaptation import ADAPTATION_FILE, adaptation_markdown, read_final_adaptation

    for path in _runs(folder):
        scored = path / ADAPTATION_FILE
        if not scored.is_file():
            continue
        record = json.loads(scored.read_text(encoding="utf-8"))
        rows = record["scores"]
        fold_info = {n: json.loads((path / "folds" / n / "fold.json").read_text(encoding="utf-8"))
                     for n in rows["plain"]["folds"]}
        card.sections[f"Test-time adaptation (run `{path.name}`)"] = adaptation_markdown(
            rows, list(rows["plain"]["folds"]), fold_info, record["primary"], record.get("choose_by")).split("\n", 2)[2]
        metrics.setdefault("adaptation", {})[path.name] = record
    found = read_final_adaptation(final_run)
    if found is None:
        return None
    record, arrays = found
    spec = AdaptationSpec(settings=record["settings"], chosen_by=record["chosen_by"], selection=record["selection"],
                          ships=record["ships"], n_rows=int(record["n_rows"]))
    ships = spec.ships
    for run_id, scored in (metrics.get("adaptation") or {}).items():
        rows, protocol = scored["scores"], RunResult.load(_run_path(folder, run_id)).protocol
        value = rows.get(ships, {}).get("mean_of_folds", {}).get(scored["primary"]) if ships else None
        if value is not None and protocol == "leave_one_language_out":
            name = {"macro_f1": "macro-F1", "ua": "UA"}.get(scored["primary"], scored["primary"])
            card.scores[f"leave-one-language-out {name} + {ships}, mean over languages"] = value
    metrics["adaptation_state"] = {k: v for k, v in record.items() if k != "final_sha256"}
    return spec, arrays
