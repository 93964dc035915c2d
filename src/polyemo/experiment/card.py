"""The model card's text and the scores of a bundle's runs (for :mod:`polyemo.experiment.export`).

:func:`run_scores` reads a finished run into JSON-ready scores (per corpus for EmoBox folds,
per held-out language for leave-one-language-out); :func:`card_sections`,
:func:`training_section` and :func:`choices_section` turn them and the final model's record
into the card's markdown sections, including how each setting was chosen.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from polyemo.experiment.final import FinalModelInfo
from polyemo.experiment.results import RUN_FILE, RunResult
from polyemo.numbers import finite_or_none, percent


# --- scores of the runs ---------------------------------------------------------------------------

def _runs(folder: Path) -> list[Path]:
    """Run folders in ``folder``: itself, or the cells of a benchmark."""
    if (folder / RUN_FILE).is_file() or (folder / "final").is_dir():
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


