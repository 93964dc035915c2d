"""Score a run: the folds' test predictions -> metrics with intervals (:class:`RunScores`).

Per fold, mean of folds and pooled (:func:`polyemo.metrics.aggregate_folds`, speaker-cluster
bootstrap where rows name speakers), pooled per test corpus, and the train x test corpus
cells of cross-corpus protocols. Nothing is written here: :mod:`polyemo.experiment.report`
writes what this computes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from polyemo.experiment.config import ExperimentConfig
from polyemo.experiment.plan import ExperimentPlan
from polyemo.experiment.results import FoldSummary, RunResult
from polyemo.experiment.scoring import cross_corpus_cells, has_speakers, headline
from polyemo.numbers import finite


@dataclass
class RunScores:
    """Everything a run's report shows, computed from its predictions."""

    result: RunResult
    #: polyemo.metrics.FoldAggregate of the folds (per fold, mean of folds, pooled)
    aggregate: Any
    #: every test prediction, folds in split order
    predictions: pd.DataFrame
    #: per test corpus: the full pooled result (by_corpus.json; empty for one corpus) and its scored classes
    by_corpus: dict[str, dict[str, Any]] = field(default_factory=dict)
    corpus_classes: dict[str, list[str]] = field(default_factory=dict)
    #: train corpus x test corpus cells (cross-corpus protocols; empty otherwise)
    cells: pd.DataFrame | None = None
    #: dimensional scores (polyemo.metrics.FoldAggregate, regression) of ``target: dimensions``; issue 13
    dimensions: Any = None


def normalisation_label(config: ExperimentConfig, folds: list[dict[str, Any]]) -> str:
    """The normalisation's name, or, where ``select`` chose it per fold, what each fold chose."""
    if config.select is None or not any("normalisation" in c for c in config.select.expanded()):
        return config.normalisation
    chosen = []
    for fold in folds:
        record = fold.get("selection") or {}
        if record:
            chosen.append(record["candidates"][record["chosen"]].get("normalisation", config.normalisation))
    counts = {name: chosen.count(name) for name in dict.fromkeys(chosen)}
    options = sorted({c.get("normalisation", config.normalisation) for c in config.select.expanded()})
    return (f"chosen in each fold by select ({config.select.by}) among {', '.join(options)}: "
            + ", ".join(f"{name} in {n} of {len(chosen)} folds" for name, n in counts.items()))


def score_run(plan: ExperimentPlan, predictions: dict[str, pd.DataFrame], fold_info: dict[str, dict[str, Any]],
              seconds: dict[str, float], out_dir: Path) -> RunScores:
    """Metrics of a run from each fold's predictions and ``fold.json`` record."""
    from polyemo.metrics import FoldPredictions, aggregate_folds, evaluate_classification

    config, split, classes = plan.config, plan.split, plan.classes
    names = [f.name for f in split.folds]
    all_predictions = pd.concat([predictions[n] for n in names], ignore_index=True)
    # Speakers are the resampling unit unless the config says utterances or no row names a speaker.
    by_speaker = config.metrics.bootstrap_unit == "speaker" and has_speakers(all_predictions["speaker"])
    n_boot, alpha, seed = config.metrics.n_boot, config.metrics.alpha, config.seed
    fold_predictions = [
        FoldPredictions(y_true=predictions[n]["true"].tolist(), y_pred=predictions[n]["pred"].tolist(), name=n,
                        groups=predictions[n]["speaker"].astype(str).tolist() if by_speaker else None,
                        # pooled: speakers resampled within each test corpus (every corpus keeps its share)
                        strata=predictions[n]["corpus"].astype(str).tolist())
        for n in names
    ]
    aggregate = aggregate_folds(fold_predictions, labels=classes, task="classification",
                                n_boot=n_boot, alpha=alpha, seed=seed, strata_name="test corpora")
    primary = config.metrics.primary
    enrol = config.training.get("enrol_clips")  # enrolment clips per speaker (enrolled-speaker)
    scored = list(aggregate.pooled.evaluated_classes)
    intervals: dict[str, str] = {}
    if aggregate.mean_of_folds[primary].ci is not None:
        intervals["mean_of_folds"] = aggregate.mean_of_folds[primary].ci.describe()
    if primary in aggregate.pooled.ci:
        intervals["pooled"] = aggregate.pooled.ci[primary].describe()
    mean_of_folds_ci = {k: [finite(s.ci.low), finite(s.ci.high)] for k, s in aggregate.mean_of_folds.items() if s.ci is not None}
    pooled = {k: finite(v) for k, v in aggregate.pooled.summary().items()}
    pooled_ci = {k: [finite(c.low), finite(c.high)] for k, c in aggregate.pooled.ci.items()}
    normalisation = normalisation_label(config, [fold_info[n] for n in names])
    line = headline(primary, len(names), finite(aggregate.mean_of_folds[primary].mean), mean_of_folds_ci.get(primary),
                    intervals.get("mean_of_folds", ""), pooled[primary], pooled_ci.get(primary), intervals.get("pooled", ""),
                    scored, split.protocol, normalisation, enrol)

    folds = []
    for name, metrics in zip(names, aggregate.folds):
        info = fold_info[name]
        folds.append(FoldSummary(
            name=name, n_train=info["n_train"], n_validation=info["n_validation"], n_test=info["n_test"],
            ua=finite(metrics.ua), wa=finite(metrics.wa), macro_f1=finite(metrics.macro_f1),
            classes=info["classes"], selected_layer=info.get("selected_layer"), best_epoch=info.get("best_epoch"),
            seconds=info.get("seconds", 0.0), info=info.get("info", {}),
            scored_classes=list(metrics.evaluated_classes),
            n_test_speakers=int(predictions[name]["speaker"].nunique()) if by_speaker else 0,
        ))

    by_corpus: dict[str, dict[str, float]] = {}
    corpus_reports: dict[str, dict[str, Any]] = {}
    corpus_classes: dict[str, list[str]] = {}
    if all_predictions["corpus"].nunique() > 1:
        for corpus, rows in all_predictions.groupby("corpus", sort=True):
            pooled_here = evaluate_classification(rows["true"].tolist(), rows["pred"].tolist(), classes,
                                                  groups=rows["speaker"].astype(str).tolist() if by_speaker else None,
                                                  n_boot=n_boot, alpha=alpha, seed=seed)
            corpus_reports[str(corpus)] = pooled_here.model_dump(mode="json")
            by_corpus[str(corpus)] = {k: finite(v) for k, v in pooled_here.summary().items()}
            if primary in pooled_here.ci:
                by_corpus[str(corpus)].update({f"{primary}_low": finite(pooled_here.ci[primary].low),
                                               f"{primary}_high": finite(pooled_here.ci[primary].high)})
                intervals["pooled_by_corpus"] = pooled_here.ci[primary].describe()
            corpus_classes[str(corpus)] = list(pooled_here.evaluated_classes)

    # issue 13: dimensional predictions -> CCC / Pearson / MAE per attribute with intervals
    dimensional = None
    if config.dimensions is not None:
        from polyemo.experiment.dimensions import score_dimensions

        dimensional = score_dimensions(predictions, names, by_speaker=by_speaker, n_boot=n_boot, alpha=alpha,
                                       seed=seed, spec=config.dimensions)
    if dimensional is not None:
        dim_aggregate, dim_line = dimensional
        trained = config.head.name not in ("dimensional", "avd") or float(config.head.params.get("class_weight", 0)) > 0
        line = f"{dim_line}; categorical output ({'trained' if trained else 'NOT trained, class_weight 0'}): {line}"
        pooled.update({k: finite(v) for k, v in dim_aggregate.pooled.summary().items()})
        pooled_ci.update({k: [finite(c.low), finite(c.high)] for k, c in dim_aggregate.pooled.ci.items()})
        mean_of_folds_ci.update({k: [finite(s.ci.low), finite(s.ci.high)]
                                 for k, s in dim_aggregate.mean_of_folds.items() if s.ci is not None})

    cells = cross_corpus_cells(all_predictions, {n: fold_info[n].get("info", {}) for n in names}, classes,
                               by_speaker=by_speaker, n_boot=n_boot, alpha=alpha, seed=seed, source=config.name)
    result = RunResult(
        name=config.name, out_dir=str(out_dir), fingerprint=config.fingerprint(), protocol=split.protocol,
        encoder=config.encoder.name, head=config.head.name, classes=classes, primary_metric=primary,
        primary=finite(aggregate.mean_of_folds[primary].mean), primary_std=finite(aggregate.mean_of_folds[primary].std),
        pooled=pooled, pooled_ci=pooled_ci,
        mean_of_folds={k: finite(s.mean) for k, s in aggregate.mean_of_folds.items()} | (
            {} if dimensional is None else {k: finite(s.mean) for k, s in dimensional[0].mean_of_folds.items()}),
        n_utterances=len(plan.manifest), n_folds=len(names), folds=folds, by_corpus=by_corpus, seconds=seconds,
        primary_ci=mean_of_folds_ci.get(primary, []), mean_of_folds_ci=mean_of_folds_ci, intervals=intervals,
        scored_classes=scored, normalisation=normalisation, headline=line,
    )
    return RunScores(result=result, aggregate=aggregate, predictions=all_predictions, by_corpus=corpus_reports,
                     corpus_classes=corpus_classes, cells=cells,
                     dimensions=None if dimensional is None else dimensional[0])
