"""Run one experiment: plan -> inputs -> fit each fold -> score -> report.

:func:`run_experiment` writes a run folder::

    config.yaml, config.json     the resolved configuration (paths absolute)
    plan.json                    what it resolved to: classes, rows, split hash, feature request
    manifest.csv                 the experiment's rows (with their ``target`` class)
    feature_failures.csv         rows the encoder could not use (left out)
    split/                       split.json (verified hash) + one CSV per fold
    folds/<fold>/predictions.csv, fold.json, training_log.jsonl
    folds/<fold>/validation_predictions.csv   validation predictions of a fold not refitted (ensembles)
    predictions.csv              every test utterance: utt_id, corpus, speaker, fold, true,
                                 pred, p_<class>...
    metrics.json, metrics.md     per fold, mean_of_folds AND pooled (bootstrap CIs)
    metrics_confusion.png        pooled confusion matrix
    by_corpus.json               pooled metrics per test corpus (several corpora)
    layer_weights.png            learned layer weights (weighted layers), mean over folds
    layer_selection.png          validation score per layer (best-on-validation)
    cross_corpus.png, .csv       train corpus x test corpus UA (cross_corpus protocol)
    report.md                    a short human report
    result.json                  :class:`RunResult`, written last: the run is complete
    final/                       the deployable model (``final_model``; :mod:`polyemo.experiment.final`)

The stages are modules of their own: :mod:`~polyemo.experiment.plan` (rows, classes, split,
feature request), :mod:`~polyemo.experiment.inputs` (what a fold's model reads),
:mod:`~polyemo.experiment.selection` (every choice and the fit, on training rows only),
:mod:`~polyemo.experiment.score` and :mod:`~polyemo.experiment.report`; this module only
runs them in order. Validation comes from each fold's training speakers (the split
protocols carve it), and the test part is opened once, after training, through
:class:`polyemo.train.SealedSplit`. Folds whose ``fold.json`` exists are not run again, so
an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from polyemo.experiment.config import ExperimentConfig, load_experiment
from polyemo.experiment.data import TARGET_COLUMN, experiment_manifest
from polyemo.experiment.errors import ExperimentError
from polyemo.experiment.final import train_final_model
from polyemo.experiment.inputs import CachedFeatures, FoldInputs, InputProvider, fold_class_masks, shared_encoder
from polyemo.experiment.plan import PLAN_FILE, FeatureRequest, make_experiment_split, resolve_plan, saved_or_new_split
from polyemo.experiment.report import write_run_report
from polyemo.experiment.results import FOLD_FILE, RUN_FILE, FoldSummary, RunResult
from polyemo.experiment.score import score_run
from polyemo.experiment.selection import fit_on_training, scored_rows, select_layer_on_validation
from polyemo.io import read_table, write_json, write_table, write_text
from polyemo.progress import progress_bar

# Names that lived here before the stages had modules of their own.
__all__ = ["ExperimentError", "FoldInputs", "FoldSummary", "RunResult", "RUN_FILE", "FOLD_FILE", "RUN_OUTPUTS",
           "fold_class_masks", "make_experiment_split", "saved_or_new_split", "select_layer_on_validation",
           "shared_encoder", "prepare_run_dir", "write_config", "run_fold", "run_experiment"]

# Files a fresh run removes from an existing run folder (never anything else).
RUN_OUTPUTS = (
    "config.yaml", "config.json", PLAN_FILE, "manifest.csv", "feature_failures.csv", "corpus_failures.csv",
    "predictions.csv", "metrics.json", "metrics.md", "metrics_confusion.png", "by_corpus.json", "layer_weights.png",
    "layer_selection.png", "cross_corpus.png", "cross_corpus.csv", "cross_corpus_cells.csv", "report.md", "dimensions.md",
    "adaptation.json", "adaptation.md", RUN_FILE,
)


def prepare_run_dir(out_dir: Path, config: ExperimentConfig, fresh: bool) -> None:
    """Create the folder; refuse to mix results of two different configurations."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if fresh:
        for name in RUN_OUTPUTS:
            (out_dir / name).unlink(missing_ok=True)
        for folder in ("folds", "split"):
            if (out_dir / folder).is_dir():
                shutil.rmtree(out_dir / folder)
        return
    previous = out_dir / "config.json"
    if previous.exists():
        try:
            old = json.loads(previous.read_text(encoding="utf-8")).get("fingerprint")
        except (OSError, json.JSONDecodeError):
            old = None
        if old != config.fingerprint():
            raise ExperimentError(
                f"{out_dir} holds a run of a different configuration (fingerprint {old}, this one "
                f"{config.fingerprint()}); choose another output folder or pass fresh=True (--fresh)")


def write_config(out_dir: Path, config: ExperimentConfig) -> None:
    resolved = config.resolved()
    write_text(out_dir / "config.yaml", yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True))
    write_json(out_dir / "config.json", {"fingerprint": config.fingerprint(), "config": resolved})


def run_fold(config: ExperimentConfig, fold, parts: dict[str, pd.DataFrame], inputs: InputProvider,
             classes: list[str], fold_dir: Path, show_progress: bool) -> pd.DataFrame:
    """Train on the fold's train part, select on validation, predict the test part once."""
    from polyemo.train import SealedSplit

    started = time.perf_counter()
    train_rows, val_rows, test_rows = parts["train"], parts["validation"], parts["test"]
    fold_classes = [c for c in classes if c in set(train_rows[TARGET_COLUMN])]
    if len(fold_classes) < 2:
        raise ExperimentError(f"fold {fold.name}: its training part has fewer than two classes ({fold_classes})")
    if val_rows.empty:
        raise ExperimentError(
            f"fold {fold.name}: no validation rows (its training part has fewer than two speakers); "
            "raise limit.per_corpus or choose another protocol")
    fold_dir.mkdir(parents=True, exist_ok=True)
    train_config = config.train_config(show_progress=show_progress, log_path=fold_dir / "training_log.jsonl")
    # Every choice (candidates, layer, C, epoch) and the refit see the train/validation rows only.
    fitted = fit_on_training(config, train_rows, val_rows, inputs, fold_classes, train_config)
    estimator, report = fitted.estimator, fitted.report
    if fitted.refit is None:  # a model that never saw its validation rows: keep their predictions (ensembles)
        from polyemo.experiment.ensemble import write_validation_predictions

        write_validation_predictions(fitted, inputs, train_rows, val_rows, fold.name, classes, fold_classes, fold_dir)

    # The test part is built (and sealed) only after every choice was made on train/validation.
    masks = fold_class_masks(pd.concat([train_rows, val_rows]), fold_classes)
    test_data = fitted.prepare(inputs.split_data(test_rows, fold_classes, masks), inputs.layers)
    test = SealedSplit(test_data, name=f"{fold.name} test")
    prediction = estimator.predict(test.open(report.receipt))
    # enrolled-speaker normalisation: each test speaker's enrolment clips only fed its statistics
    scored = scored_rows(estimator, test_data)
    test_rows, n_enrolment = test_rows[scored], int((~scored).sum())
    prediction = type(prediction)(prediction.probabilities[scored], {k: v[scored] for k, v in prediction.outputs.items()})

    # Probabilities over the experiment's classes (0 for classes this fold never trained on).
    probabilities = np.zeros((len(test_rows), len(classes)))
    for j, name in enumerate(fold_classes):
        probabilities[:, classes.index(name)] = prediction.probabilities[:, j]
    predicted = [fold_classes[i] for i in prediction.predictions]
    frame = pd.DataFrame({
        "utt_id": test_rows["utt_id"].astype(str).to_numpy(),
        "corpus": test_rows["corpus"].astype(str).to_numpy(),
        "language": test_rows["language"].astype(str).to_numpy(),
        "speaker": test_rows["speaker"].astype(str).to_numpy(),
        "fold": fold.name,
        "true": test_rows[TARGET_COLUMN].astype(str).to_numpy(),
        "pred": predicted,
    })
    for j, name in enumerate(classes):
        frame[f"p_{name}"] = probabilities[:, j]
    if config.dimensions is not None:  # issue 13: true_/pred_<attribute> on the corpus scale
        from polyemo.experiment.dimensions import add_dimension_columns

        add_dimension_columns(frame, prediction.outputs, None if test_data.avd is None else test_data.avd[scored],
                              config.dimensions, None if test_data.gender is None else test_data.gender[scored])
    write_table(fold_dir / "predictions.csv", frame)
    adaptation = None
    if config.adaptation is not None:  # issue 12: each adapter on the unlabelled test batch, beside the plain
        from polyemo.experiment.adaptation import adapt_fold

        adaptation = adapt_fold(config, fitted, inputs, train_rows, val_rows, test_data, scored,
                                prediction.probabilities, frame, fold_classes, classes, fold_dir)

    weights = estimator.layer_weights()
    summary = {
        "name": fold.name,
        "classes": fold_classes,
        "n_train": len(train_rows), "n_validation": len(val_rows), "n_test": len(test_rows),
        "n_enrolment": n_enrolment,  # test clips that only fed enrolled-speaker statistics (not in n_test)
        # rows the scored model was trained on: train + validation after a refit
        "n_fit": (fitted.refit or {}).get("n_rows", len(train_rows)),
        "refit": fitted.refit,
        "selected_layer": fitted.selected_layer,
        "layer_scores": fitted.layer_scores,
        "layers": fitted.encoder_layers,
        "loaded_layers": [int(x) for x in inputs.layers],
        "selection": None if fitted.selection is None else fitted.selection.model_dump(mode="json"),
        "best_epoch": report.best_epoch,
        "val_metrics": {k: report.val_metrics.get(k) for k in ("ua", "wa", "macro_f1")},
        "history": report.history,
        "layer_weights": None if weights is None else np.asarray(weights).tolist(),
        "seconds": round(time.perf_counter() - started, 3),
        "info": fold.info,
        **({"adaptation": adaptation} if adaptation is not None else {}),
    }
    write_json(fold_dir / FOLD_FILE, summary)  # last: the fold is finished
    return frame


def run_experiment(
    config: str | Path | dict[str, Any] | ExperimentConfig,
    out_dir: str | Path | None = None,
    *,
    overrides: dict[str, Any] | None = None,
    progress: bool = True,
    fresh: bool = False,
) -> RunResult:
    """Run an experiment (a YAML path, a mapping or a config) into ``out_dir``.

    ``overrides``: dotted keys applied before validation, e.g. ``{"limit": 20,
    "training.epochs": 1, "encoder": {"name": "egemaps"}}``. Default ``out_dir``:
    ``runs/<name>``. A finished run (``result.json`` of the same configuration) is returned
    as it is; an interrupted one resumes, skipping finished folds. ``fresh`` first removes
    the previous outputs of the folder.
    """
    started = time.perf_counter()
    config = load_experiment(config, overrides)
    out = Path(out_dir) if out_dir is not None else Path("runs") / config.name
    prepare_run_dir(out, config, fresh)
    done = out / RUN_FILE
    if done.exists():
        previous = RunResult.load(done)
        if previous.fingerprint == config.fingerprint():
            train_final_model(config, out, progress=progress)  # only with final_model; reused when current
            _final_adaptation(config, out, None)
            return previous
    write_config(out, config)

    # plan (rows and feature request) -> inputs (features of those rows) -> plan (classes, split)
    manifest, corpus_failures = experiment_manifest(config, show_progress=progress)
    if len(corpus_failures):
        write_table(out / "corpus_failures.csv", corpus_failures)
    request = FeatureRequest.of(config)
    t_features = time.perf_counter()
    inputs = CachedFeatures.extract(config.name, manifest, request, shared_encoder(config),
                                    progress=progress, failures_path=out / "feature_failures.csv")
    seconds = {"features": round(time.perf_counter() - t_features, 3)}
    write_table(out / "manifest.csv", inputs.manifest)
    plan = resolve_plan(config, out, inputs.manifest, request)

    # fit and predict each fold (finished folds are read back)
    predictions: dict[str, pd.DataFrame] = {}
    fold_info: dict[str, dict[str, Any]] = {}
    t_folds = time.perf_counter()
    with progress_bar("{task.fields[status]}", enabled=progress) as bar:
        task = bar.add_task(f"{config.name} folds", total=len(plan.split.folds), status="")
        for fold in plan.split.folds:
            fold_dir = out / "folds" / fold.name
            if (fold_dir / FOLD_FILE).exists() and (fold_dir / "predictions.csv").exists():
                predictions[fold.name] = read_table(fold_dir / "predictions.csv").astype({"true": str, "pred": str})
                fold_info[fold.name] = json.loads((fold_dir / FOLD_FILE).read_text(encoding="utf-8"))
                bar.update(task, advance=1, status=f"{fold.name}: done before")
                continue
            bar.update(task, status=fold.name)
            parts = plan.split.frames(plan.manifest, fold.name)
            predictions[fold.name] = run_fold(config, fold, parts, inputs, plan.classes, fold_dir, progress)
            fold_info[fold.name] = json.loads((fold_dir / FOLD_FILE).read_text(encoding="utf-8"))
            bar.update(task, advance=1)
    seconds["folds"] = round(time.perf_counter() - t_folds, 3)
    seconds["total"] = round(time.perf_counter() - started, 3)

    # score -> report -> result.json (last: the run is complete)
    scores = score_run(plan, predictions, fold_info, seconds, out)
    write_run_report(out, plan, scores, fold_info, feature_failures=inputs.n_failed)
    if config.adaptation is not None:  # issue 12: plain first, each adapter beside it (adaptation.md)
        from polyemo.experiment.adaptation import plain_scores, score_adaptations

        section = score_adaptations(config, out, [f.name for f in plan.split.folds], plan.classes,
                                    plain_scores(scores.result), fold_info)
        write_text(out / "report.md", (out / "report.md").read_text(encoding="utf-8").rstrip() + "\n\n" + section)
    if scores.dimensions is not None:  # issue 13: CCC / Pearson / MAE per attribute with intervals
        from polyemo.experiment.dimensions import dimension_markdown

        write_text(out / "dimensions.md", dimension_markdown(scores.dimensions, config.dimensions))
    result = scores.result
    result.files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and not p.name.startswith("."))
    result.files.append(RUN_FILE)
    write_json(out / RUN_FILE, result.model_dump(mode="json"))
    train_final_model(config, out, inputs, progress=progress)  # only with final_model (the deployable model)
    _final_adaptation(config, out, inputs)
    return result


def _final_adaptation(config: ExperimentConfig, out: Path, inputs: InputProvider | None) -> None:
    """What the final model's bundle needs to adapt at prediction time (issue 12; final/adaptation.json)."""
    if config.final_model:
        from polyemo.experiment.adaptation import write_final_adaptation

        try:
            write_final_adaptation(config, out, inputs)
        except Exception as exc:  # noqa: BLE001 - without an adaptation block it is an optional extra
            if config.adaptation is not None:
                raise
            import warnings

            warnings.warn(f"{out}: no adaptation state for the final model's bundle ({type(exc).__name__}: {exc})",
                          stacklevel=2)
