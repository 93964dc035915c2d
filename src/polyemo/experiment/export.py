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
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from polyemo.experiment.final import (
    FinalModelInfo,
    final_dir,
    load_final_model,
    read_final_info,
)

from polyemo.experiment.results import RUN_FILE, RunResult
from polyemo.numbers import finite_or_none, percent

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


# --- scores of the runs ---------------------------------------------------------------------------

def _runs(folder: Path) -> list[Path]:
    """Run folders in ``folder``: itself, or the cells of a benchmark."""
    if (folder / RESULT_FILE).is_file() or (folder / "final").is_dir():
        return [folder]
    cells = folder / "cells"
    if cells.is_dir():
        return sorted(p for p in cells.iterdir() if p.is_dir())
    return []


def _corpus_languages(run: Path) -> dict[str, str]:
    import pandas as pd

    path = run / "manifest.csv"
    if not path.is_file():
        return {}
    frame = pd.read_csv(path, usecols=["corpus", "language"], dtype=str)
    return dict(frame.drop_duplicates("corpus").itertuples(index=False, name=None))


def _fold_rows(result: RunResult) -> list[dict[str, Any]]:
    return [{"fold": f.name, "n_test": f.n_test, "ua": finite_or_none(f.ua), "wa": finite_or_none(f.wa),
             "macro_f1": finite_or_none(f.macro_f1), "classes": f.classes,
             "info": {k: v for k, v in f.info.items() if k in ("corpus", "target", "regime", "test_corpus", "train_corpora",
                                                               "speaker_independent", "shared_speakers")}}
            for f in result.folds]


def _mean(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def run_scores(run: Path, result: RunResult) -> dict[str, Any]:
    """JSON-ready scores of one finished run, with per-corpus (EmoBox) or per-language
    (leave one language out) tables where the protocol has them."""
    languages = _corpus_languages(run)
    corpora = sorted(languages) or sorted(result.by_corpus)
    scores: dict[str, Any] = {
        "name": result.name, "protocol": result.protocol, "classes": result.classes,
        "n_utterances": result.n_utterances, "n_folds": result.n_folds, "corpora": corpora,
        "mean_of_folds": result.mean_of_folds, "mean_of_folds_ci": result.mean_of_folds_ci,
        "pooled": result.pooled, "pooled_ci": result.pooled_ci,
        "by_corpus": result.by_corpus, "folds": _fold_rows(result), "headline": result.headline,
    }
    if result.protocol in ("emobox_official", "emobox_coverage", "emobox_rule", "emobox"):
        per_corpus: dict[str, dict[str, Any]] = {}
        for fold in result.folds:
            corpus = fold.info.get("corpus") or (corpora[0] if len(corpora) == 1 else None)
            if corpus is None:
                continue
            per_corpus.setdefault(corpus, {"folds": []})["folds"].append(fold)
        for corpus, entry in per_corpus.items():
            folds = entry.pop("folds")
            entry.update(language=languages.get(corpus, "?"), n_folds=len(folds), n_test=sum(f.n_test for f in folds),
                         regime=folds[0].info.get("regime"),
                         speaker_independent=all(f.info.get("speaker_independent", True) for f in folds),
                         **{m: _mean([finite_or_none(getattr(f, m)) for f in folds]) for m in ("ua", "wa", "macro_f1")})
        scores["per_corpus"] = dict(sorted(per_corpus.items()))
    elif result.protocol == "leave_one_language_out":
        per_language: dict[str, dict[str, Any]] = {}
        for fold in result.folds:
            language = str(fold.info.get("target", fold.name))
            per_language[language] = {
                "corpora": sorted(c for c, lang in languages.items() if lang == language),
                "n_test": fold.n_test, "classes": fold.classes,
                "ua": finite_or_none(fold.ua), "wa": finite_or_none(fold.wa), "macro_f1": finite_or_none(fold.macro_f1),
            }
        scores["per_language"] = dict(sorted(per_language.items()))
    return scores


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


# --- the card --------------------------------------------------------------------------------------

def card_sections(runs: dict[str, dict[str, Any]]) -> tuple[dict[str, float], dict[str, str]]:
    """Headline scores and markdown sections of the model card from the runs' scores."""
    headline: dict[str, float] = {}
    sections: dict[str, str] = {}
    for run_id, scores in runs.items():
        if "per_corpus" in scores:
            table = scores["per_corpus"]
            rows = [[c, e["language"], e["n_folds"], e.get("regime") or "",
                     {True: "yes", False: "no"}.get(e.get("speaker_independent"), "?"), e["n_test"], percent(e["ua"]),
                     percent(e["wa"]), percent(e["macro_f1"])] for c, e in table.items()]
            mean_ua = _mean([e["ua"] for e in table.values()])
            mean_f1 = _mean([e["macro_f1"] for e in table.values()])
            rows.append(["**mean**", "", "", "", "", sum(e["n_test"] for e in table.values()), percent(mean_ua), "", percent(mean_f1)])
            if scores["protocol"] in ("emobox_official", "emobox"):
                folds_are = ("EmoBox's published folds (emobox_official: EmoBox's own train/test files; EmoDB's, URDU's "
                             "and ASED's share speakers between train and test, as published; validation carved from "
                             "the training speakers of each fold)")
            else:
                folds_are = ("EmoBox's speaker-count fold rule (speaker-independent folds; validation carved from the "
                             "training speakers of each fold)")
            sections[f"Cross-validated scores per corpus (EmoBox folds, run `{run_id}`)"] = (
                f"Each corpus on its own, with the same recipe: {folds_are}, mean over its folds, in %. "
                "Each fold's model saw only that corpus' training rows.\n\n"
                + _table(["corpus", "language", "folds", "regime", "speaker-independent", "test rows", "UA", "WA",
                          "macro-F1"], rows)
                + (f"\n\nAll corpora together: {scores['headline']}." if scores.get("headline") else ""))
            if mean_ua is not None:
                headline["EmoBox UA, mean over corpora"] = mean_ua
            if mean_f1 is not None:
                headline["EmoBox macro-F1, mean over corpora"] = mean_f1
        elif "per_language" in scores:
            table = scores["per_language"]
            rows = [[lang, ", ".join(e["corpora"]), e["n_test"], len(e["classes"]), percent(e["ua"]), percent(e["wa"]),
                     percent(e["macro_f1"])] for lang, e in table.items()]
            mean = scores["mean_of_folds"]
            rows.append(["**mean**", "", sum(e["n_test"] for e in table.values()), "", percent(mean.get("ua")),
                         percent(mean.get("wa")), percent(mean.get("macro_f1"))])
            sections[f"Leave one language out (run `{run_id}`)"] = (
                "Trained on every other language (validation from their speakers), tested on the held-out language, "
                "which played no part in any choice; in %. This is the score to expect on a language the model never "
                "heard. Classes counts the classes the model was trained on in that fold.\n\n"
                + _table(["held-out language", "corpora", "test rows", "classes", "UA", "WA", "macro-F1"], rows)
                + (f"\n\n{scores['headline']}." if scores.get("headline") else ""))
            for metric, label in (("macro_f1", "macro-F1"), ("ua", "UA")):
                if mean.get(metric) is not None and math.isfinite(mean[metric]):
                    headline[f"leave-one-language-out {label}, mean over languages"] = float(mean[metric])
        else:
            mean = scores["mean_of_folds"]
            sections[f"Scores of run `{run_id}` ({scores['protocol']})"] = _table(
                ["metric", "mean over folds", "pooled"],
                [[m, percent(mean.get(m)), percent(scores["pooled"].get(m))] for m in ("ua", "wa", "macro_f1")])
    return headline, sections


def training_section(info: FinalModelInfo) -> str:
    layers = ", ".join(str(x) for x in info.encoder_layers)
    chosen = f" (chosen on validation among {', '.join(info.layer_scores)})" if info.layer_scores else ""
    return (
        f"The bundled model was trained once more on every row of the run: {info.n_train} utterances for training "
        f"and {info.n_validation} utterances of {len(info.validation_speakers)} held-out speakers for validation "
        f"({'model selection, then refitted on both' if info.refit else 'model selection only'}), "
        f"from {', '.join(info.corpora)} ({', '.join(info.languages)}). "
        f"Encoder layers read: {layers}{chosen}. Validation scores: UA {percent(info.validation.get('ua'))}%, "
        f"macro-F1 {percent(info.validation.get('macro_f1'))}%."
    )


def _candidate_text(candidate: dict[str, Any]) -> str:
    return ", ".join(f"{k} {json.dumps(v) if not isinstance(v, str) else v}" for k, v in candidate.items())


def choices_section(info: FinalModelInfo, folds: dict[str, dict[str, Any]]) -> str:
    """How every setting of the bundled model was chosen, and the folds' own choices.

    ``folds``: fold name -> ``fold.json`` of the runs' folds that made a ``select`` choice.
    """
    lines = []
    selection = info.selection
    if selection:
        by = selection["by"]
        where = ("on the validation speakers" if by == "validation" else
                 f"by an inner `{by}` over the model's own training data (inner test groups: "
                 + "; ".join(", ".join(g) for g in selection["inner_test_groups"]) + ")")
        rows = [[("**" if i == selection["chosen"] else "") + _candidate_text(c) + ("**" if i == selection["chosen"] else ""),
                 percent(score)] for i, (c, score) in enumerate(zip(selection["candidates"], selection["scores"]))]
        lines.append(f"Settings chosen {where}, by mean {selection['metric']} (%); the chosen one in bold. "
                     f"{selection['n_rows']} rows took part, all of them training rows of this model.\n\n"
                     + _table(["candidate", f"inner {selection['metric']}"], rows))
    chosen = info.chosen
    if chosen:
        lines.append(f"Trained with: normalisation `{chosen.get('normalisation')}`, encoder layers "
                     f"{info.encoder_layers}, head `{json.dumps(chosen.get('head'))}`.")
    if info.refit:
        fixed = ", ".join(f"{k} {v}" for k, v in info.refit.items() if k not in ("n_rows", "n_train", "n_validation"))
        lines.append(f"After C (and the epoch) were chosen on the {info.n_validation} validation utterances, the model "
                     f"was refitted on all {info.refit['n_rows']} utterances with them fixed ({fixed}).")
    if folds:
        rows = []
        for name, fold in folds.items():
            record = fold["selection"]
            groups = "; ".join(", ".join(g) for g in record.get("inner_test_groups", [])) or "validation speakers"
            rows.append([name, groups, _candidate_text(record["candidates"][record["chosen"]])])
        lines.append("Each evaluation fold made the same choice on its own training data only (the held-out "
                     "language or speakers never took part):\n\n"
                     + _table(["fold", "chosen on", "chosen"], rows))
    return "\n\n".join(lines)


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
    if info.target != "label" or info.label_set is None:
        raise ExportError(f"{final_dir(final_run)}: the model predicts {info.target!r}; bundles hold emotion classes")
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
    json.dumps(metrics)  # fails here, not half-way through writing, if something is not JSON
    return export_estimator(
        bundle, bundleable(estimator), encoder=info.encoder, identity=info.identity,
        labels=LabelSet(**info.label_set), card=card, encoder_layers=info.encoder_layers,
        metrics=metrics, overwrite=overwrite,
    )
