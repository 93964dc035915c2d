"""Ensembles as a stage after training: finished runs on the same folds -> one combined run.

:func:`ensemble_runs` takes two or more run folders that share their split (same
``split.json`` hash: the same rows in the same train / validation / test parts) and the
same classes, and combines their test predictions fold by fold with a rule of
:data:`polyemo.ensemble.RULES` (``vote``, ``mean``, ``weighted``, ``stacking``)::

    ensemble.json          rule, parameters, members (run folders, fingerprints), per fold
                           what the rule learned (tie-break member, weights, stacker)
    members.csv            every member and the ensemble, scored the same way
    comparison.json        the ensemble against its best member: paired bootstrap of the
                           difference in the mean of folds, and McNemar's test on pooled rows
    folds/<fold>/predictions.csv, rule.json
    validation/<member>/<fold>.csv   validation predictions recomputed for runs that lack them
    predictions.csv, metrics.json, metrics.md, metrics_confusion.png, report.md
    result.json            a :class:`~polyemo.experiment.results.RunResult` (written last)

Whatever a rule learns is learned in each fold from the members' predictions on that fold's
VALIDATION rows (carved from its training speakers): ``folds/<fold>/validation_predictions.csv``
of the run where it kept them (runs without a refit do), else recomputed here by fitting each
member's selection model again (its every choice, ``refit`` off: a model that never saw those
rows) -- deterministic, from the run's own configuration, split and cached features. Test
rows are read only to be combined and scored. The scores are :func:`~polyemo.experiment.score.score_run`'s,
the same metrics and intervals as every run's. "Best member" in the comparison is the member
with the best test score: a statement about the result, not a choice of the ensemble.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from polyemo.experiment.config import ExperimentConfig, load_experiment
from polyemo.experiment.data import TARGET_COLUMN
from polyemo.experiment.errors import ExperimentError
from polyemo.experiment.plan import PLAN_FILE, ExperimentPlan, FeatureRequest
from polyemo.experiment.results import FOLD_FILE, RUN_FILE, RunResult
from polyemo.experiment.score import RunScores, score_run
from polyemo.experiment.scoring import headline, paired_against
from polyemo.io import read_table, write_json, write_table, write_text
from polyemo.numbers import finite, percent

VALIDATION_FILE = "validation_predictions.csv"
ENSEMBLE_FILE = "ensemble.json"


class EnsembleError(ExperimentError):
    """Members that cannot be combined (other split, folds, classes), or a bad ensemble spec."""


# --- members -----------------------------------------------------------------------------------

@dataclass
class Member:
    """A finished run as an ensemble member."""

    name: str
    run_dir: Path
    result: RunResult
    config: ExperimentConfig
    classes: list[str]
    split_sha256: str
    folds: list[str]
    #: fold -> its test predictions (predictions.csv rows of that fold, by utt_id)
    test: dict[str, pd.DataFrame] = field(default_factory=dict)


def load_member(run_dir: str | Path, name: str | None = None) -> Member:
    """A finished run folder (its ``result.json``, ``plan.json``, ``predictions.csv``)."""
    run_dir = Path(run_dir)
    for needed in (RUN_FILE, PLAN_FILE, "config.json", "predictions.csv"):
        if not (run_dir / needed).is_file():
            raise EnsembleError(f"{run_dir}: no {needed}; an ensemble member must be a finished run folder")
    result = RunResult.load(run_dir)
    plan = json.loads((run_dir / PLAN_FILE).read_text(encoding="utf-8"))
    config = load_experiment(json.loads((run_dir / "config.json").read_text(encoding="utf-8"))["config"])
    predictions = read_table(run_dir / "predictions.csv").astype({"true": str, "pred": str, "fold": str, "utt_id": str})
    folds = [str(f) for f in plan["split"]["folds"]]
    test = {fold: rows.sort_values("utt_id", kind="stable").reset_index(drop=True)
            for fold, rows in predictions.groupby("fold", sort=False)}
    return Member(name=name or result.name, run_dir=run_dir, result=result, config=config,
                  classes=[str(c) for c in plan["classes"]], split_sha256=str(plan["split"]["sha256"]),
                  folds=folds, test=test)


def check_compatible(members: list[Member]) -> None:
    """Refuse members that were not trained and tested on the same split, folds and classes."""
    if len(members) < 2:
        raise EnsembleError(f"an ensemble needs at least two member runs, got {len(members)}")
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        raise EnsembleError(f"member names repeat: {names}; name them (names=...)")
    first = members[0]
    for other in members[1:]:
        where = f"{first.run_dir} ({first.name}) and {other.run_dir} ({other.name})"
        if other.split_sha256 != first.split_sha256:
            raise EnsembleError(
                f"{where} were not run on the same split (split.json sha256 {first.split_sha256[:12]}… vs "
                f"{other.split_sha256[:12]}…): other rows, protocol, seed or fold parts. An ensemble combines "
                "predictions of the same test rows in the same folds; run the members with the same corpora, "
                "labels, protocol and seed")
        if other.folds != first.folds:
            raise EnsembleError(f"{where} have different folds: {first.folds} vs {other.folds}")
        if set(other.classes) != set(first.classes):
            raise EnsembleError(f"{where} have different classes: {first.classes} vs {other.classes}")
        for fold in first.folds:
            a, b = first.test.get(fold), other.test.get(fold)
            if a is None or b is None or a["utt_id"].tolist() != b["utt_id"].tolist():
                raise EnsembleError(f"{where}: fold {fold} scored different test rows "
                                    f"({0 if a is None else len(a)} vs {0 if b is None else len(b)})")


# --- validation predictions ----------------------------------------------------------------------

def prediction_frame(rows: pd.DataFrame, fold: str, classes: list[str], fold_classes: list[str],
                     probabilities: np.ndarray) -> pd.DataFrame:
    """Rows with their true class, predicted class and ``p_<class>`` over the experiment's
    classes (0 for classes the fold never trained on): the columns of a run's predictions."""
    full = np.zeros((len(rows), len(classes)))
    for j, name in enumerate(fold_classes):
        full[:, classes.index(name)] = probabilities[:, j]
    frame = pd.DataFrame({
        "utt_id": rows["utt_id"].astype(str).to_numpy(),
        "corpus": rows["corpus"].astype(str).to_numpy(),
        "speaker": rows["speaker"].astype(str).to_numpy(),
        "fold": fold,
        "true": rows[TARGET_COLUMN].astype(str).to_numpy(),
        "pred": [classes[i] for i in full.argmax(axis=1)] if len(full) else [],
    })
    for j, name in enumerate(classes):
        frame[f"p_{name}"] = full[:, j]
    return frame


def validation_predictions_of_fit(estimator, val_data, val_rows: pd.DataFrame, fold: str, classes: list[str],
                                  fold_classes: list[str]) -> pd.DataFrame:
    """The validation predictions of a model fitted WITHOUT its validation rows (the
    selection fit), on the rows it scored (enrolment clips left out, as on test)."""
    from polyemo.experiment.selection import scored_rows

    scored = scored_rows(estimator, val_data)
    probabilities = estimator.predict(val_data).probabilities[scored]
    return prediction_frame(val_rows[scored].reset_index(drop=True), fold, classes, fold_classes, probabilities)


def write_validation_predictions(fitted, inputs, train_rows: pd.DataFrame, val_rows: pd.DataFrame, fold: str,
                                 classes: list[str], fold_classes: list[str], fold_dir: Path) -> None:
    """``<fold>/validation_predictions.csv`` of a fold whose model was fitted without its
    validation rows (no refit): what ensembles fit their rules on."""
    from polyemo.experiment.inputs import fold_class_masks

    masks = fold_class_masks(pd.concat([train_rows, val_rows]), fold_classes)
    val_data = fitted.prepare(inputs.split_data(val_rows, fold_classes, masks), inputs.layers)
    write_table(fold_dir / VALIDATION_FILE,
                validation_predictions_of_fit(fitted.estimator, val_data, val_rows, fold, classes, fold_classes))


def recompute_validation(member: Member, progress: bool = False) -> dict[str, pd.DataFrame]:
    """Each fold's validation predictions of ``member``'s selection model, fitted again on the
    fold's training rows with every choice of the run and no refit (see the module)."""
    from polyemo.experiment.inputs import fold_class_masks, load_inputs
    from polyemo.experiment.selection import fit_on_training
    from polyemo.splits import Split

    config = member.config
    inputs = load_inputs(config, progress=progress)
    split = Split.load(member.run_dir / "split")
    if split.sha256 != member.split_sha256:
        raise EnsembleError(f"{member.run_dir}/split: the saved split differs from plan.json's")
    out: dict[str, pd.DataFrame] = {}
    for fold in split.folds:
        parts = split.frames(inputs.manifest, fold.name)
        train_rows, val_rows = parts["train"], parts["validation"]
        fold_classes = [c for c in member.classes if c in set(train_rows[TARGET_COLUMN])]
        quiet = config.train_config(show_progress=False, log_path=None)
        fitted = fit_on_training(config, train_rows, val_rows, inputs, fold_classes, quiet, refit=False)
        masks = fold_class_masks(pd.concat([train_rows, val_rows]), fold_classes)
        val_data = fitted.prepare(inputs.split_data(val_rows, fold_classes, masks), inputs.layers)
        out[fold.name] = validation_predictions_of_fit(fitted.estimator, val_data, val_rows, fold.name,
                                                       member.classes, fold_classes)
    return out


def member_validation(member: Member, out_dir: Path, progress: bool = False) -> tuple[dict[str, pd.DataFrame], str]:
    """``member``'s validation predictions per fold and where they came from."""
    kept = {f: member.run_dir / "folds" / f / VALIDATION_FILE for f in member.folds}
    if all(p.is_file() for p in kept.values()):
        return {f: read_table(p).astype({"true": str, "utt_id": str}) for f, p in kept.items()}, "kept by the run"
    cache = out_dir / "validation" / _slug(member.name)
    stamp = cache / "source.json"
    source = {"run": str(member.run_dir.resolve()), "fingerprint": member.result.fingerprint,
              "split_sha256": member.split_sha256}
    files = {f: cache / f"{_slug(f)}.csv" for f in member.folds}
    if stamp.is_file() and json.loads(stamp.read_text(encoding="utf-8")) == source and all(p.is_file() for p in files.values()):
        return {f: read_table(p).astype({"true": str, "utt_id": str}) for f, p in files.items()}, "recomputed (reused)"
    frames = recompute_validation(member, progress=progress)
    for fold, frame in frames.items():
        write_table(files[fold], frame)
    write_json(stamp, source)
    return frames, "recomputed (selection fits, no refit)"


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.+=" else "_" for c in str(text)) or "x"


# --- combining -----------------------------------------------------------------------------------

@dataclass
class EnsembleResult:
    result: RunResult
    out_dir: Path
    members: pd.DataFrame
    comparison: dict[str, Any]
    learned: dict[str, dict[str, Any]]


def _probabilities(frame: pd.DataFrame, member: Member, classes: list[str]) -> np.ndarray:
    from polyemo.ensemble import align_classes

    return align_classes(frame[[f"p_{c}" for c in member.classes]].to_numpy(dtype=np.float64), member.classes, classes)


def combine_fold(members: list[Member], fold: str, validation: dict[str, dict[str, pd.DataFrame]], classes: list[str],
                 rule: str, params: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Fit ``rule`` on the fold's validation predictions, combine its test predictions."""
    from polyemo.ensemble import build_rule

    names = [m.name for m in members]
    # Validation rows every member scored (the same split: the same rows unless one
    # member's normaliser held some out), in one order.
    frames = [validation[m.name][fold].drop_duplicates("utt_id").set_index("utt_id") for m in members]
    common = sorted(set.intersection(*(set(f.index) for f in frames)))
    val_probs = [_probabilities(f.loc[common].reset_index(), m, classes) for f, m in zip(frames, members)]
    truth = frames[0].loc[common, "true"].astype(str)
    labels = np.array([classes.index(t) if t in classes else -1 for t in truth], dtype=np.int64)
    fitted = build_rule(rule, names, **params)
    try:
        fitted.fit(val_probs, labels)
    except ValueError as error:
        raise EnsembleError(f"fold {fold}: rule {rule!r}: {error}") from None
    test_probs = [_probabilities(m.test[fold], m, classes) for m in members]
    combined = fitted.combine(test_probs)
    base = members[0].test[fold]
    frame = base[[c for c in ("utt_id", "corpus", "language", "speaker", "fold", "true") if c in base]].copy()
    frame["pred"] = [classes[i] for i in combined.predictions]
    for j, name in enumerate(classes):
        frame[f"p_{name}"] = combined.probabilities[:, j]
    return frame, {**fitted.state(), "n_validation_rows": len(common)}


def _fold_info(member: Member, fold: str, n_test: int) -> dict[str, Any]:
    path = member.run_dir / "folds" / fold / FOLD_FILE
    info = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    return {"n_train": info.get("n_train", 0), "n_validation": info.get("n_validation", 0), "n_test": n_test,
            "classes": info.get("classes", member.classes), "info": info.get("info", {}), "selection": None}


def _scoring_plan(member: Member, n_boot: int | None) -> ExperimentPlan:
    """The first member's plan (split, classes, manifest), for scoring the same way."""
    from polyemo.splits import Split

    config = member.config
    if n_boot is not None:
        config = config.model_copy(update={"metrics": config.metrics.model_copy(update={"n_boot": n_boot})})
    config = config.model_copy(update={"select": None})
    manifest = read_table(member.run_dir / "manifest.csv") if (member.run_dir / "manifest.csv").is_file() else pd.DataFrame(
        {"utt_id": []})
    return ExperimentPlan(config=config, manifest=manifest, classes=list(member.classes),
                          split=Split.load(member.run_dir / "split"), features=FeatureRequest.of(config))


def _score(plan: ExperimentPlan, frames: dict[str, pd.DataFrame], fold_info: dict[str, dict[str, Any]],
           out_dir: Path) -> RunScores:
    return score_run(plan, frames, fold_info, {}, out_dir)


def _per_class_f1(scores: RunScores) -> dict[str, float]:
    return {row.label: finite(row.f1) for row in scores.aggregate.pooled.per_class if row.support > 0}


def _member_row(name: str, kind: str, scores: RunScores, primary: str) -> dict[str, Any]:
    result = scores.result
    ci = result.mean_of_folds_ci.get(primary, [math.nan, math.nan])
    pooled_ci = result.pooled_ci.get(primary, [math.nan, math.nan])
    row = {"member": name, "kind": kind, primary: result.primary, f"{primary}_low": ci[0], f"{primary}_high": ci[1],
           f"pooled_{primary}": result.pooled.get(primary), f"pooled_{primary}_low": pooled_ci[0],
           f"pooled_{primary}_high": pooled_ci[1], "macro_f1": result.mean_of_folds.get("macro_f1"),
           "wa": result.mean_of_folds.get("wa")}
    row.update({f"f1_{c}": v for c, v in _per_class_f1(scores).items()})
    return row


def mcnemar(truth: pd.Series, a: pd.Series, b: pd.Series) -> dict[str, Any]:
    """McNemar's exact test on pooled rows: a right where b is wrong and vice versa."""
    from scipy.stats import binomtest

    right_a, right_b = (a.to_numpy() == truth.to_numpy()), (b.to_numpy() == truth.to_numpy())
    only_a, only_b = int((right_a & ~right_b).sum()), int((~right_a & right_b).sum())
    p = 1.0 if only_a + only_b == 0 else float(binomtest(only_a, only_a + only_b, 0.5).pvalue)
    return {"ensemble_only_right": only_a, "best_only_right": only_b, "p_value": p,
            "test": "McNemar's exact (binomial) test on pooled test rows, two-sided"}


def ensemble_runs(
    runs: list[str | Path],
    out_dir: str | Path,
    *,
    rule: str = "vote",
    params: dict[str, Any] | None = None,
    names: list[str] | None = None,
    name: str | None = None,
    n_boot: int | None = None,
    progress: bool = False,
) -> EnsembleResult:
    """Combine finished runs ``runs`` (same split, folds and classes) by ``rule`` into ``out_dir``.

    ``params``: the rule's parameters (``vote``: ``tiebreak`` = ``best-on-validation``,
    ``confidence`` or a member name; ``weighted``: ``balanced``, ``l2``; ``stacking``: ``C``,
    ``balanced``). ``names``: member names (default: each run's name). ``n_boot``: bootstrap
    resamples (default: the first member's ``metrics.n_boot``). See the module for the files.
    """
    from polyemo.ensemble import RULES

    started = time.perf_counter()
    params = dict(params or {})
    if names is not None and len(names) != len(runs):
        raise EnsembleError(f"{len(names)} names for {len(runs)} member runs")
    try:
        factory = RULES.get(rule)
    except KeyError as error:
        raise EnsembleError(str(error.args[0])) from None
    rule = factory.name
    members = [load_member(run, None if names is None else names[i]) for i, run in enumerate(runs)]
    check_compatible(members)
    try:  # parameters (a tie-break member's name...) checked before any work
        probe = factory([m.name for m in members], **params)
    except ValueError as error:
        raise EnsembleError(str(error)) from None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / RUN_FILE).unlink(missing_ok=True)  # written last: the ensemble is complete
    classes = list(members[0].classes)
    folds = members[0].folds
    primary = members[0].config.metrics.primary

    # Validation predictions only when the rule learns from them (vote with a fixed tie-break does not).
    validation: dict[str, dict[str, pd.DataFrame]] = {}
    sources: dict[str, str] = {}
    for member in members:
        if probe.fitted_on_validation:
            validation[member.name], sources[member.name] = member_validation(member, out, progress)
        else:
            validation[member.name] = {f: member.test[f].iloc[:0] for f in folds}  # nothing to learn
            sources[member.name] = "not needed by the rule"

    frames: dict[str, pd.DataFrame] = {}
    learned: dict[str, dict[str, Any]] = {}
    for fold in folds:
        frames[fold], learned[fold] = combine_fold(members, fold, validation, classes, rule, params)
        write_table(out / "folds" / _slug(fold) / "predictions.csv", frames[fold])
        write_json(out / "folds" / _slug(fold) / "rule.json", learned[fold])

    plan = _scoring_plan(members[0], n_boot)
    info = {f: _fold_info(members[0], f, len(frames[f])) for f in folds}
    ensemble_scores = _score(plan, frames, info, out)
    member_scores = {m.name: _score(plan, m.test, info, out) for m in members}
    rows = [_member_row(m.name, "member", member_scores[m.name], primary) for m in members]
    ensemble_name = name or f"ensemble-{rule}"
    rows.append(_member_row(ensemble_name, f"ensemble ({rule})", ensemble_scores, primary))
    table = pd.DataFrame(rows)
    write_table(out / "members.csv", table)

    # The comparison: the ensemble against the member with the best test score (a report, not a choice).
    best = max(members, key=lambda m: (finite(member_scores[m.name].result.primary), -members.index(m)))
    best_frame = pd.concat([best.test[f] for f in folds], ignore_index=True)
    ens_frame = pd.concat([frames[f] for f in folds], ignore_index=True)
    cfg = plan.config.metrics
    paired = paired_against(best_frame, ens_frame, classes, primary, by_speaker=cfg.bootstrap_unit == "speaker",
                            n_boot=cfg.n_boot, alpha=cfg.alpha, seed=plan.config.seed)
    merged = ens_frame[["utt_id", "fold", "true", "pred"]].merge(
        best_frame[["utt_id", "fold", "pred"]], on=["utt_id", "fold"], suffixes=("", "_best"))
    comparison = {
        "best_member": best.name, "metric": primary,
        "ensemble": ensemble_scores.result.primary, "best": member_scores[best.name].result.primary,
        "paired_bootstrap": paired, "mcnemar": mcnemar(merged["true"], merged["pred"], merged["pred_best"]),
        "note": "best member = best test score of the members (what the ensemble is compared with; nothing was chosen on it)",
    }
    write_json(out / "comparison.json", comparison)

    identity = hashlib.sha256(json.dumps({"members": [m.result.fingerprint for m in members], "rule": rule,
                                          "params": params}, sort_keys=True).encode()).hexdigest()[:16]
    result = ensemble_scores.result
    line = headline(primary, len(folds), result.primary, result.primary_ci, result.intervals.get("mean_of_folds", ""),
                    result.pooled[primary], result.pooled_ci.get(primary), result.intervals.get("pooled", ""),
                    result.scored_classes, result.protocol, "per member (each member's own)")
    result = result.model_copy(update={
        "name": ensemble_name, "out_dir": str(out), "fingerprint": identity, "normalisation": "per member",
        "encoder": " + ".join(dict.fromkeys(m.result.encoder for m in members)), "head": f"ensemble:{rule}",
        "headline": line, "seconds": {"total": round(time.perf_counter() - started, 3)},
    })
    write_json(out / ENSEMBLE_FILE, {
        "name": ensemble_name, "rule": rule, "params": params, "classes": classes, "folds": folds,
        "members": [{"name": m.name, "run": str(m.run_dir.resolve()), "fingerprint": m.result.fingerprint,
                     "encoder": m.result.encoder, "head": m.result.head, "validation": sources[m.name]} for m in members],
        "learned": learned,
    })
    from polyemo.report import write_metrics_report

    write_metrics_report(ensemble_scores.aggregate, out, name="metrics", title=f"{ensemble_name}: {rule} of "
                         f"{len(members)} members", summary=f"{line}.")
    write_table(out / "predictions.csv", ens_frame)
    write_text(out / "report.md", ensemble_report(result, table, comparison, learned, members, rule, params, sources))
    result.files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and not p.name.startswith("."))
    result.files.append(RUN_FILE)
    write_json(out / RUN_FILE, result.model_dump(mode="json"))
    return EnsembleResult(result=result, out_dir=out, members=table, comparison=comparison, learned=learned)


# --- report ------------------------------------------------------------------------------------

def _interval(low: Any, high: Any) -> str:
    return f"[{percent(low)}, {percent(high)}]" if low is not None and np.isfinite(low) else ""


def learned_summary(learned: dict[str, dict[str, Any]]) -> list[str]:
    """What the rule learned, over folds, in words."""
    lines = []
    breakers = [s["learned"].get("tiebreak_member") for s in learned.values() if s["learned"].get("tiebreak_member")]
    if breakers:
        counts = pd.Series(breakers).value_counts()
        lines.append("tie-break member per fold: " + ", ".join(f"{k} in {v} of {len(learned)}" for k, v in counts.items()))
    weights = [s["learned"]["weights"] for s in learned.values() if "weights" in s["learned"]]
    if weights:
        mean = pd.DataFrame(weights).mean()
        lines.append("weights (mean over folds): " + ", ".join(f"{k} {v:.2f}" for k, v in mean.items()))
    if any("coef" in s["learned"] for s in learned.values()):
        lines.append("stacker: a logistic regression per fold on the members' validation log-probabilities")
    return lines


def ensemble_report(result: RunResult, table: pd.DataFrame, comparison: dict[str, Any], learned: dict[str, dict[str, Any]],
                    members: list[Member], rule: str, params: dict[str, Any], sources: dict[str, str]) -> str:
    primary = result.primary_metric
    shown = pd.DataFrame({
        "system": table["member"], "kind": table["kind"],
        f"{primary} % (mean of folds)": [f"{percent(v)} {_interval(lo, hi)}" for v, lo, hi in
                                         zip(table[primary], table[f"{primary}_low"], table[f"{primary}_high"])],
        f"pooled {primary} %": [f"{percent(v)} {_interval(lo, hi)}" for v, lo, hi in
                                zip(table[f"pooled_{primary}"], table[f"pooled_{primary}_low"], table[f"pooled_{primary}_high"])],
        "macro-F1 %": [percent(v) for v in table["macro_f1"]],
    })
    f1 = table[["member", *[c for c in table.columns if c.startswith("f1_")]]].copy()
    f1.columns = ["system", *[c[3:] for c in f1.columns[1:]]]
    for column in f1.columns[1:]:
        f1[column] = [percent(v) for v in f1[column]]
    paired = comparison["paired_bootstrap"]
    mc = comparison["mcnemar"]
    diff = (f"{percent(paired['diff'])} points {_interval(paired['diff_low'], paired['diff_high'])} ({paired['interval']}; "
            f"{paired['paired']})") if "diff" in paired else paired.get("paired", "")
    from polyemo.experiment.report import md_table

    lines = [
        f"# {result.name}", "", f"**{result.headline}.**", "",
        f"Rule `{rule}` {json.dumps(params) if params else ''} over {len(members)} members run on the same split "
        f"(protocol `{result.protocol}`, {result.n_folds} folds); whatever the rule learns is learned in each fold "
        "from the members' validation predictions (training speakers only).", "",
        "## Members and ensemble", "", md_table(shown), "",
        "## Per-class F1 (pooled, %)", "", md_table(f1), "",
        "## Against the best member", "",
        f"- best member (by test {primary}, for this comparison only): `{comparison['best_member']}` "
        f"{percent(comparison['best'])} %; ensemble {percent(comparison['ensemble'])} %",
        f"- paired difference (ensemble - best), mean of folds: {diff}",
        f"- McNemar (pooled rows): ensemble alone right {mc['ensemble_only_right']}, best alone right "
        f"{mc['best_only_right']}, p = {mc['p_value']:.3g}", "",
        "## What the rule learned", "", *[f"- {line}" for line in learned_summary(learned) or ["nothing (no fitted parameters)"]],
        "", "## Members", "",
        *[f"- `{m.name}`: {m.run_dir} (encoder {m.result.encoder}, head {m.result.head}; validation predictions: "
          f"{sources[m.name]})" for m in members], "",
    ]
    return "\n".join(lines)


# --- deployment -----------------------------------------------------------------------------------

def deployment_rule(ensemble_dir: str | Path, progress: bool = False) -> dict[str, Any]:
    """The ensemble's rule fitted once for deployment (an ensemble bundle), on the validation
    predictions of every fold pooled (each row predicted by a fold model that never trained on
    it), with the members' and the ensemble's scores for the card."""
    from polyemo.ensemble import build_rule

    folder = Path(ensemble_dir)
    if not (folder / RUN_FILE).is_file() or not (folder / ENSEMBLE_FILE).is_file():
        raise EnsembleError(f"{folder}: not a finished ensemble folder (no {RUN_FILE} / {ENSEMBLE_FILE})")
    info = json.loads((folder / ENSEMBLE_FILE).read_text(encoding="utf-8"))
    members = [load_member(m["run"], m["name"]) for m in info["members"]]
    classes = list(info["classes"])
    rule = build_rule(info["rule"], [m.name for m in members], **info.get("params", {}))
    probabilities: list[list[np.ndarray]] = [[] for _ in members]
    labels: list[np.ndarray] = []
    if rule.fitted_on_validation:
        validation = {m.name: member_validation(m, folder, progress)[0] for m in members}
        for fold in info["folds"]:
            frames = [validation[m.name][fold].drop_duplicates("utt_id").set_index("utt_id") for m in members]
            common = sorted(set.intersection(*(set(f.index) for f in frames)))
            for i, (frame, member) in enumerate(zip(frames, members)):
                probabilities[i].append(_probabilities(frame.loc[common].reset_index(), member, classes))
            labels.append(np.array([classes.index(t) if t in classes else -1 for t in frames[0].loc[common, "true"]]))
        rule.fit([np.concatenate(p) for p in probabilities], np.concatenate(labels))
    else:
        rule.fit([np.zeros((0, len(classes)))] * len(members), np.zeros(0, dtype=np.int64))
    table = read_table(folder / "members.csv").set_index("member")
    keep = [c for c in ("ua", "pooled_ua", "macro_f1", "wa") if c in table.columns]
    scores = {m.name: {k: float(table.loc[m.name, k]) for k in keep} for m in members}
    result = RunResult.load(folder)
    return {"rule": rule.state(), "member_scores": scores,
            "scores": {k: float(table.loc[result.name, k]) for k in keep} if result.name in table.index else {},
            "name": result.name, "protocol": result.protocol, "members": info["members"]}
