"""Nested selection: every choice an experiment makes is made inside its training data.

A fold (or the final model) gets its training rows and the validation rows carved from
its training speakers; it never gets the test rows. :func:`fit_on_training` makes every
choice the configuration asks for on those rows alone, in this order:

1. ``select`` (an experiment field, :class:`~polyemo.experiment.specs.SelectSpec`): the candidate settings --
   normalisation, head (with its C grid), loss, training settings, encoder layers -- are
   each scored either on the validation speakers (``by: validation``) or by an inner
   protocol over the fold's training rows (``by: leave_one_language_out``: train on all but
   one TRAINING language, score on that one, mean over the training languages; any split
   protocol works). The best candidate (ties: the first listed) is used.
2. ``encoder.select: best-on-validation``: one layer by the validation score.
3. ``C`` and the checkpoint epoch: on validation, inside the estimator.
4. Refit (``training.refit``, default): the estimator is trained again on training +
   validation rows with every choice fixed.

What was chosen, among what, with which scores and on how many rows is returned as a
:class:`SelectionRecord`, so fold files and bundles can show that nothing came from a test
score. ``rows_sha256`` hashes the sorted ids of the rows the choice saw.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from polyemo.experiment.config import ExperimentConfig, deep_merge, experiment_from_dict
from polyemo.experiment.data import TARGET_COLUMN
from polyemo.experiment.errors import ExperimentError
from polyemo.experiment.inputs import InputProvider, fold_class_masks
from polyemo.experiment.specs import CANDIDATE_FIELDS, SelectSpec  # noqa: F401  (select's spec, for its readers)

if TYPE_CHECKING:
    from polyemo.train import Estimator, FitReport, SplitData


class SelectionRecord(BaseModel):
    """How a candidate was chosen (a fold's ``fold.json``, a final model's ``final.json``)."""

    by: str
    metric: str
    candidates: list[dict[str, Any]]
    scores: list[float] = Field(description="per candidate: validation score, or mean over the inner folds")
    per_fold: list[list[float]] = Field(default_factory=list, description="per candidate, per inner fold")
    inner_folds: list[str] = Field(default_factory=list)
    inner_test_groups: list[list[str]] = Field(default_factory=list,
                                               description="per inner fold: the languages/corpora/speakers scored")
    chosen: int
    n_rows: int = Field(description="rows the choice saw (training + validation of the fold; never its test)")
    rows_sha256: str

    @property
    def choice(self) -> dict[str, Any]:
        return self.candidates[self.chosen]


def rows_digest(utt_ids: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(sorted(map(str, utt_ids))).encode()).hexdigest()


def apply_candidate(config: ExperimentConfig, candidate: dict[str, Any]) -> ExperimentConfig:
    """The experiment with one candidate's settings (and no ``select`` of its own)."""
    update = {k: v for k, v in candidate.items() if k not in ("layers", "augment")}
    if "layers" in candidate:
        update["encoder"] = {"layers": candidate["layers"]}
    if "augment" in candidate:
        update.setdefault("encoder", {})["augment"] = candidate["augment"]
    data = deep_merge(config.resolved(), update)
    data["select"] = None
    if "head" in candidate and isinstance(candidate["head"], (str, dict)):
        # A candidate's head replaces the base head whole (its params are not merged in).
        data["head"] = candidate["head"]
    return experiment_from_dict(data)


def layer_positions(config: ExperimentConfig, loaded: Sequence[int]) -> list[int] | None:
    """Positions in the loaded layers of ``config.encoder.layers`` (None: all of them)."""
    wanted = config.encoder.layers
    if wanted == "all":
        return None
    missing = [layer for layer in wanted if layer not in loaded]
    if missing:
        raise ExperimentError(f"layers {missing} were not extracted (loaded: {list(loaded)}); "
                              "list every candidate's layers in encoder.layers")
    return [list(loaded).index(layer) for layer in wanted]


def restrict(data: SplitData, positions: list[int] | None) -> SplitData:
    if positions is None or positions == list(range(data.num_layers)):
        return data
    if data.is_frames:
        return data.with_features([f[positions] for f in data.features])
    return data.with_features(data.features[:, positions])


@dataclass
class TrainedOnTraining:
    """An estimator whose every choice was made on training rows, and how."""

    estimator: Estimator
    report: FitReport
    config: ExperimentConfig
    #: encoder layers the estimator reads (after candidate and layer choices)
    encoder_layers: list[int]
    selected_layer: int | None = None
    layer_scores: dict[str, float] = field(default_factory=dict)
    selection: SelectionRecord | None = None
    refit: dict[str, Any] | None = None

    def prepare(self, data: SplitData, loaded: Sequence[int]) -> SplitData:
        """Cut new rows (e.g. the opened test split) to the layers the estimator reads."""
        return restrict(data, [list(loaded).index(layer) for layer in self.encoder_layers])


def scored_rows(estimator: Estimator, data: SplitData) -> np.ndarray:
    """Which rows of held-out ``data`` are scored: all, except the enrolment clips of an
    enrolled-speaker normaliser (they only feed each speaker's statistics)."""
    enrolment = getattr(estimator.normaliser, "enrolment", None)
    return ~enrolment(data) if enrolment is not None else np.ones(len(data), dtype=bool)


def _score(estimator: Estimator, data: SplitData, metric: str) -> float:
    from polyemo.train.adapters import classification_scores

    scored = scored_rows(estimator, data)
    probabilities = estimator.predict(data).probabilities[scored]
    return float(classification_scores(data.labels[scored], probabilities, estimator.class_names)[metric])


def choose_candidate(config: ExperimentConfig, train_rows: pd.DataFrame, val_rows: pd.DataFrame, inputs: InputProvider,
                     classes: list[str], train_config) -> SelectionRecord:
    """Score every candidate of ``config.select`` on the given TRAINING rows only."""
    spec = config.select
    assert spec is not None
    candidates = spec.expanded()
    metric = spec.metric or train_config.selection_metric
    quiet = {"show_progress": False, "log_path": None, "checkpoint_path": None}
    seen = pd.concat([train_rows, val_rows], ignore_index=True)
    scores: list[float] = []
    per_fold: list[list[float]] = []
    inner_names: list[str] = []
    inner_groups: list[list[str]] = []

    if spec.by == "validation":
        for candidate in candidates:
            sub = apply_candidate(config, candidate)
            fitted = fit_on_training(sub, train_rows, val_rows, inputs, classes,
                                     sub.train_config(**quiet), refit=False)
            val = fitted.prepare(inputs.split_data(val_rows, fitted.estimator.class_names,
                                                   fold_class_masks(seen, fitted.estimator.class_names)), inputs.layers)
            scores.append(_score(fitted.estimator, val, metric))
    else:
        from polyemo.splits import SplitError, make_split

        try:
            inner = make_split(seen, spec.by, label_column=TARGET_COLUMN, seed=config.seed, **spec.params)
        except SplitError as error:
            raise ExperimentError(f"select.by {spec.by}: cannot split the training rows: {error}") from None
        inner_names = [f.name for f in inner.folds]
        parts = {f.name: inner.frames(seen, f.name) for f in inner.folds}
        for fold in inner.folds:
            # What each inner fold held out: its target (a language, a corpus) or its test speakers.
            target = fold.info.get("target")
            inner_groups.append([str(target)] if target is not None
                                else sorted(parts[fold.name]["test"]["speaker"].astype(str).unique()))
        for candidate in candidates:
            sub = apply_candidate(config, candidate)
            fold_scores = []
            for name in inner_names:
                part = parts[name]
                fold_classes = [c for c in classes if c in set(part["train"][TARGET_COLUMN])]
                fitted = fit_on_training(sub, part["train"], part["validation"], inputs, fold_classes,
                                         sub.train_config(**quiet))
                test_rows = part["test"][part["test"][TARGET_COLUMN].isin(fold_classes)]
                test = fitted.prepare(inputs.split_data(test_rows, fold_classes, {}), inputs.layers)
                fold_scores.append(_score(fitted.estimator, test, metric))
            per_fold.append(fold_scores)
            finite = [s for s in fold_scores if math.isfinite(s)]
            scores.append(float(np.mean(finite)) if finite else float("nan"))

    ranked = [s if math.isfinite(s) else -math.inf for s in scores]
    chosen = int(np.argmax(ranked))  # first of the best
    return SelectionRecord(by=spec.by, metric=metric, candidates=candidates, scores=scores, per_fold=per_fold,
                           inner_folds=inner_names, inner_test_groups=inner_groups, chosen=chosen,
                           n_rows=len(seen), rows_sha256=rows_digest(seen["utt_id"].astype(str)))


def select_layer_on_validation(train, val, head_config, train_config, classes) -> tuple[int, dict[int, float]]:
    """Index of the loaded layer whose head scores best on VALIDATION (ties: the lower layer)."""
    from polyemo.train import build_estimator

    scores: dict[int, float] = {}
    quiet = train_config.model_copy(update={"show_progress": False, "log_path": None, "checkpoint_path": None})
    for index in range(train.num_layers):
        estimator = build_estimator(head_config, quiet, len(classes), list(classes))
        report = estimator.fit(train.select_layer(index), val.select_layer(index))
        scores[index] = float(report.best_score)
    best = max(scores, key=lambda i: (scores[i], -i))
    return best, scores


def fit_on_training(config: ExperimentConfig, train_rows: pd.DataFrame, val_rows: pd.DataFrame, inputs: InputProvider,
                    classes: list[str], train_config, *, refit: bool | None = None) -> TrainedOnTraining:
    """Make every choice of ``config`` on ``train_rows`` / ``val_rows`` and fit (see the module).

    ``inputs``: an :class:`~polyemo.experiment.inputs.InputProvider` (inputs by utt_id). The
    rows given are the only rows any step sees.
    """
    from polyemo.train.estimator import fit_and_refit

    selection = None
    if config.select is not None:
        selection = choose_candidate(config, train_rows, val_rows, inputs, classes, train_config)
        config = apply_candidate(config, selection.choice)
        overrides = {k: getattr(train_config, k) for k in ("show_progress", "log_path", "checkpoint_path", "refit")}
        train_config = config.train_config(**overrides)
    if refit is not None:
        train_config = train_config.model_copy(update={"refit": refit})

    masks = fold_class_masks(pd.concat([train_rows, val_rows]), classes)
    positions = layer_positions(config, inputs.layers)
    encoder_layers = [int(inputs.layers[i]) for i in (positions if positions is not None else range(len(inputs.layers)))]
    train = restrict(inputs.training_data(train_rows, classes, masks, config.encoder.augment), positions)
    val = restrict(inputs.split_data(val_rows, classes, masks), positions)
    head_config = config.head.head_config()

    selected, layer_scores = None, {}
    if config.encoder.select == "best-on-validation" and train.num_layers > 1:
        index, scores = select_layer_on_validation(train, val, head_config, train_config, classes)
        train, val = train.select_layer(index), val.select_layer(index)
        layer_scores = {str(encoder_layers[i]): float(s) for i, s in scores.items()}
        selected = encoder_layers[index]
        encoder_layers = [selected]
    estimator, report, refit_info = fit_and_refit(head_config, train_config, len(classes), list(classes), train, val)
    return TrainedOnTraining(estimator=estimator, report=report, config=config, encoder_layers=encoder_layers,
                             selected_layer=selected, layer_scores=layer_scores, selection=selection,
                             refit=refit_info)


# --- test-time adaptation strength (issue 12) ---------------------------------------------
def choose_adaptation(config: ExperimentConfig, train_rows: pd.DataFrame, val_rows: pd.DataFrame,
                      inputs: InputProvider, classes: list[str], options: dict[str, list[dict[str, Any]]], *,
                      by: str = "leave_one_language_out", params: dict[str, Any] | None = None,
                      metric: str = "macro_f1") -> dict[str, SelectionRecord]:
    """Per adapter, its settings chosen by an inner protocol over the TRAINING rows only.

    ``options``: adapter name -> candidate settings (e.g. ``{"prior-em": [{"strength": 0.0},
    {"strength": 1.0}]}``). Each inner fold (``by``: train on all but one TRAINING language,
    score on it) fits ``config`` (its choices already fixed: no ``select``) once, predicts its
    held-out language once, and applies every candidate of every adapter to that unlabelled
    batch; the candidate with the best mean inner score wins (ties: the first listed, so list
    the weakest setting first). The fold's own test rows are not an argument.
    """
    from polyemo.splits import SplitError, make_split
    from polyemo.train.adaptation import make_adapter

    if config.select is not None:
        raise ExperimentError("choose_adaptation takes a configuration whose choices are fixed (no select)")
    seen = pd.concat([train_rows, val_rows], ignore_index=True)
    try:
        inner = make_split(seen, by, label_column=TARGET_COLUMN, seed=config.seed, **(params or {}))
    except SplitError as error:
        raise ExperimentError(f"adaptation by {by}: cannot split the training rows: {error}") from None
    quiet = config.train_config(show_progress=False, log_path=None, checkpoint_path=None)
    per_fold: dict[str, list[list[float]]] = {name: [[] for _ in cands] for name, cands in options.items()}
    names, groups = [], []
    for fold in inner.folds:
        part = inner.frames(seen, fold.name)
        fold_classes = [c for c in classes if c in set(part["train"][TARGET_COLUMN])]
        fitted = fit_on_training(config, part["train"], part["validation"], inputs, fold_classes, quiet)
        masks = fold_class_masks(pd.concat([part["train"], part["validation"]]), fold_classes)
        fit_rows = fitted.prepare(inputs.split_data(pd.concat([part["train"], part["validation"]]), fold_classes, masks),
                                  inputs.layers)
        test_rows = part["test"][part["test"][TARGET_COLUMN].isin(fold_classes)]
        test = fitted.prepare(inputs.split_data(test_rows, fold_classes, {}), inputs.layers)
        scored = scored_rows(fitted.estimator, test)
        plain = fitted.estimator.predict(test).probabilities
        names.append(fold.name)
        target = fold.info.get("target")
        groups.append([str(target)] if target is not None else sorted(test_rows["speaker"].astype(str).unique()))
        from polyemo.train.adapters import classification_scores

        for name, candidates in options.items():
            for j, candidate in enumerate(candidates):
                adapter = make_adapter(name, **candidate).fit(fitted.estimator, fit_rows)
                # the unlabelled batch the adapter sees: the scored rows (enrolment clips only fed statistics)
                batch = test.subset(np.flatnonzero(scored))
                probabilities = adapter.adapt(fitted.estimator, batch, plain[scored])
                per_fold[name][j].append(float(classification_scores(
                    test.labels[scored], probabilities, fitted.estimator.class_names)[metric]))
    records = {}
    for name, candidates in options.items():
        scores = [float(np.mean([s for s in fold if math.isfinite(s)] or [float("nan")])) for fold in per_fold[name]]
        ranked = [s if math.isfinite(s) else -math.inf for s in scores]
        records[name] = SelectionRecord(by=by, metric=metric, candidates=[dict(c) for c in candidates], scores=scores,
                                        per_fold=per_fold[name], inner_folds=names, inner_test_groups=groups,
                                        chosen=int(np.argmax(ranked)), n_rows=len(seen),
                                        rows_sha256=rows_digest(seen["utt_id"].astype(str)))
    return records
