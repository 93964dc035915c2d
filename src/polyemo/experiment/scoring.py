"""How a run's headline numbers are scored and said: intervals, classes, cross-corpus cells, pairs.

Every number a run or a bench prints carries what was scored: the classes (and their
count), the protocol, the normalisation, whether it is the mean of folds or pooled over all
test predictions, and its 95 % interval with the way it was drawn:

* **mean of folds** -- a bootstrap within folds: each fold's test speakers (its utterances
  where a fold has a single test speaker) resampled independently, each fold re-scored, the
  scores averaged (:func:`polyemo.metrics.aggregate_folds`);
* **pooled** -- a speaker-cluster bootstrap over all test predictions, speakers resampled
  within each test corpus, so that every corpus keeps its share. Corpora rather than folds
  are the strata: a leave-one-speaker-out fold holds a single speaker, which resampled
  within its fold could never vary, and a speaker tested by several folds (cross-corpus
  pairs) stays one cluster;
* **paired** (leaderboards) -- the difference of two cells' mean of folds on the same test
  utterances in the same folds, both re-scored on the same resamples
  (:func:`polyemo.metrics.paired_difference`).

Cross-corpus heatmaps score every cell -- in-domain (diagonal) and cross-corpus alike -- the
same way: pooled UA over that cell's test predictions, with its speaker-cluster interval.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from polyemo.metrics import FoldPredictions, evaluate_classification, paired_difference
from polyemo.numbers import percent

#: the heatmaps' scoring, in the words of their titles
CROSS_CORPUS_METHOD = "pooled UA over each cell's test predictions (diagonal and off-diagonal alike)"
_UNKNOWN = {"", "nan", "none", "<na>", "unknown"}


def has_speakers(speakers: Any) -> bool:
    """Whether a speaker column names speakers (at least one known value)."""
    values = pd.Series(speakers).astype("string").str.strip().str.lower().fillna("")
    return bool(len(values)) and not values.isin(_UNKNOWN).all()


def class_text(classes: Sequence[str]) -> str:
    """``7 classes: anger, boredom, ...``."""
    return f"{len(classes)} classes: {', '.join(classes)}"


def normalisation_text(name: str, enrol: int | None = None) -> str:
    """``test-speaker (transductive, unlabelled: ...)``: the normalisation's name and what its
    statistics are (:func:`polyemo.train.normalise.describe_normalisation`)."""
    try:
        from polyemo.train.normalise import describe_normalisation
    except ImportError:  # an older polyemo.train: the name alone
        return str(name)
    try:
        return describe_normalisation(name, enrol)
    except ValueError:
        return str(name)


def interval_text(ci: Sequence[float] | None, digits: int = 1) -> str:
    return f" [{percent(ci[0], digits)}, {percent(ci[1], digits)}]" if ci and len(ci) == 2 else ""


def headline(metric: str, n_folds: int, mean: float, mean_ci: Sequence[float] | None, mean_method: str,
             pooled: float, pooled_ci: Sequence[float] | None, pooled_method: str, classes: Sequence[str],
             protocol: str, normalisation: str, enrol: int | None = None) -> str:
    """``UA mean of 10 folds 94.4 % [92.1, 96.3] (95 % ... within folds); pooled 94.0 % [..] (...); ...``."""
    name = {"ua": "UA", "wa": "WA", "macro_f1": "macro-F1"}.get(metric, metric)
    folds = f"{n_folds} fold" + ("s" if n_folds != 1 else "")
    mean_how = f" ({mean_method})" if mean_method else ""
    pooled_how = f" ({pooled_method})" if pooled_method else ""
    return (f"{name} mean of {folds} {percent(mean)} %{interval_text(mean_ci)}{mean_how}; "
            f"pooled {percent(pooled)} %{interval_text(pooled_ci)}{pooled_how}; "
            f"{class_text(classes)}; protocol {protocol}; normalisation {normalisation_text(normalisation, enrol)}")


# --- one set of predictions ------------------------------------------------------------------------

def pooled_score(frame: pd.DataFrame, classes: Sequence[str], *, by_speaker: bool = True, n_boot: int = 1000,
                 alpha: float = 0.05, seed: int = 0, metric: str = "ua") -> dict[str, Any]:
    """``metric`` pooled over the rows of a predictions frame (``true``, ``pred``, ``speaker``,
    ``corpus``), with its interval: speakers resampled within each test corpus."""
    grouped = by_speaker and "speaker" in frame and has_speakers(frame["speaker"])
    strata = frame["corpus"].astype(str).tolist() if "corpus" in frame and frame["corpus"].nunique() > 1 else None
    result = evaluate_classification(frame["true"].astype(str).tolist(), frame["pred"].astype(str).tolist(), list(classes),
                                     groups=frame["speaker"].astype(str).tolist() if grouped else None,
                                     strata=strata, strata_name="test corpora",
                                     n_boot=n_boot, alpha=alpha, seed=seed)
    ci = result.ci.get(metric)
    return {
        metric: float(getattr(result, metric)),
        f"{metric}_low": math.nan if ci is None else ci.low, f"{metric}_high": math.nan if ci is None else ci.high,
        "n_utterances": int(len(frame)),
        "n_speakers": int(frame["speaker"].nunique()) if grouped else 0,
        "n_classes": len(result.evaluated_classes), "classes": ", ".join(result.evaluated_classes),
        "interval": "" if ci is None else ci.describe(),
    }


def cross_corpus_cells(predictions: pd.DataFrame, fold_info: dict[str, dict[str, Any]], classes: Sequence[str], *,
                       by_speaker: bool = True, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0,
                       source: str = "") -> pd.DataFrame:
    """One row per (train corpora, test corpus) pair of the cross-corpus folds in ``fold_info``
    (fold name -> its ``info``): pooled UA over the test predictions of the folds of that pair."""
    keys = {name: (" + ".join(info["train_corpora"]), str(info["test_corpus"]))
            for name, info in fold_info.items() if "train_corpora" in info and "test_corpus" in info}
    rows = []
    for (train, test) in sorted(set(keys.values())):
        folds = [name for name, key in keys.items() if key == (train, test)]
        part = predictions[predictions["fold"].astype(str).isin(folds)]
        if part.empty:
            continue
        rows.append({"train": train, "test": test, "n_folds": len(folds), "source": source,
                     **pooled_score(part, classes, by_speaker=by_speaker, n_boot=n_boot, alpha=alpha, seed=seed)})
    return pd.DataFrame(rows)


def in_domain_cell(predictions: pd.DataFrame, corpus: str, classes: Sequence[str], *, by_speaker: bool = True,
                   n_boot: int = 1000, alpha: float = 0.05, seed: int = 0, source: str = "") -> dict[str, Any]:
    """The diagonal cell of ``corpus``: pooled UA over all test predictions of its in-domain run."""
    return {"train": corpus, "test": corpus, "n_folds": int(predictions["fold"].nunique()), "source": source,
            **pooled_score(predictions, classes, by_speaker=by_speaker, n_boot=n_boot, alpha=alpha, seed=seed)}


def cells_table(cells: pd.DataFrame, column: str = "ua") -> pd.DataFrame:
    """The (train x test) matrix of ``column`` from the long table of cells."""
    rows = sorted(set(cells["train"]))
    columns = sorted(set(cells["test"]))
    table = pd.DataFrame(math.nan, index=rows, columns=columns)
    for row in cells.itertuples(index=False):
        table.loc[row.train, row.test] = getattr(row, column)
    return table.rename_axis("train")


# --- pairs ---------------------------------------------------------------------------------------

def fold_predictions(frame: pd.DataFrame, by_speaker: bool = True) -> dict[str, FoldPredictions]:
    """The rows of a predictions frame per fold, in utterance order (for pairing)."""
    grouped = by_speaker and "speaker" in frame and has_speakers(frame["speaker"])
    out = {}
    for name, rows in _by_utterance(frame).groupby("fold", sort=True):
        out[str(name)] = FoldPredictions(
            y_true=rows["true"].astype(str).tolist(), y_pred=rows["pred"].astype(str).tolist(), name=str(name),
            groups=rows["speaker"].astype(str).tolist() if grouped else None)
    return out


def scored_set_key(frame: pd.DataFrame) -> str:
    """What a cell was scored on: a digest of the partition of its test utterances into folds,
    with their true labels (equal digests: the same test set in the same folds)."""
    parts = []
    for _, rows in _by_utterance(frame).groupby("fold", sort=False):
        utts = "\x1f".join(rows["utt_id"].to_numpy(dtype=object))
        truth = "\x1f".join(rows["true"].astype(str).to_numpy(dtype=object))
        parts.append(f"{utts}\x1e{truth}")
    return hashlib.sha256("\x1d".join(sorted(parts)).encode()).hexdigest()


def _by_utterance(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(utt_id=frame["utt_id"].astype(str), fold=frame["fold"].astype(str)).sort_values("utt_id", kind="stable")


def paired_against(best: pd.DataFrame, other: pd.DataFrame, classes: Sequence[str], metric: str, *,
                   by_speaker: bool = True, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> dict[str, Any]:
    """Paired bootstrap of (other - best) in the mean of folds of ``metric``, when both were scored
    on the same test utterances in the same folds; otherwise says why not."""
    if scored_set_key(best) != scored_set_key(other):
        same_rows = set(best["utt_id"].astype(str)) == set(other["utt_id"].astype(str))
        why = "different folds" if same_rows else "different test sets"
        return {"paired": f"not paired ({why})"}
    best, other = _by_utterance(best), _by_utterance(other)
    a, b = fold_predictions(other, by_speaker), fold_predictions(best, by_speaker)
    # Folds are matched by name where the names agree, else by their utterances (cross-corpus
    # folds of one test corpus share their utterances, so there the names must agree).
    content_a = {name: "\x1f".join(rows["utt_id"]) for name, rows in other.groupby("fold")}
    content_b = {name: "\x1f".join(rows["utt_id"]) for name, rows in best.groupby("fold")}
    order = sorted(a)
    if set(content_a) == set(content_b) and all(content_a[n] == content_b[n] for n in order):
        match = {name: name for name in order}
    else:
        by_content = {text: name for name, text in content_b.items()}
        if len(by_content) != len(content_b):
            return {"paired": "not paired (folds differ in name and share test sets)"}
        match = {name: by_content[content_a[name]] for name in order}
    mine = [a[name] for name in order]
    theirs = [b[match[name]] for name in order]
    seen = {v for f in mine + theirs for v in (*f.y_true, *f.y_pred)}
    labels = [c for c in classes if c in seen] + sorted(seen - set(classes))
    ci = paired_difference(mine, theirs, labels, metric, n_boot=n_boot, alpha=alpha, seed=seed)
    return {"diff": ci.value, "diff_low": ci.low, "diff_high": ci.high,
            "paired": "excludes 0" if ci.excludes_zero else "includes 0", "interval": ci.describe()}
