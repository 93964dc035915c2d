"""Cross-corpus protocol: train on one corpus (or several), test on another, balanced test.

Folds: one per (train corpus, test corpus) pair with different corpora, or with
``pool_train=True`` one per test corpus, training on all the ``train`` corpora but it.

Classes: only the classes present in both the training corpora and the test corpus
(``shared_classes``) are used; training rows of other classes are left out too unless
``restrict_train_to_shared=False``. Training never holds a file of the test corpus, nor a
file whose audio (``content_hash``) or speaker occurs in it.

Balanced test set (``balance``), EmoBox-style, drawn with the seed; identical recordings in
the test corpus are counted once (the first utt_id by sort order is kept):

- ``"speaker_class"`` (default): the eligible speakers are those with at least one
  utterance of every shared class; ``k`` = the smallest (speaker, class) count among them;
  the test set is ``k`` utterances drawn at random from every (eligible speaker, class)
  cell, so it has equal counts per class and per speaker. If no speaker has every shared
  class (e.g. URDU), it falls back to ``"class"`` and says so in the fold's ``info``.
- ``"class"``: ``m`` = the smallest class count; ``m`` utterances per class, taken one
  speaker at a time in a shuffled speaker order (so speakers are as even as they can be).
- ``"none"``: every test-corpus utterance of a shared class.

EmoBox's own balanced test sets (``test_set="emobox_track2"``, RAVDESS and SAVEE only):
the test set is exactly the 240 utterances EmoBox publishes for the target corpus (4
classes x 60, see :func:`polyemo.splits.emobox_official.track2_test_ids`; ``emobox_root``
as ``emobox_official``'s ``root``), ``balance`` does not apply, and every class of that set
must be in the training corpora (else an error names the missing classes).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from polyemo.splits import PROTOCOLS
from polyemo.splits.core import (
    DEFAULT_VALIDATION_FRACTION,
    build_split,
    drop_touching,
    labelled_rows,
    make_fold,
    rng_for,
)
from polyemo.splits.model import Split, SplitError

BALANCE_RULES = ("speaker_class", "class", "none")
TEST_SETS = ("balanced", "emobox_track2")


def _as_list(value: str | list[str] | None, name: str) -> list[str]:
    if value is None:
        raise SplitError(f"cross_corpus needs {name}=<corpus or list of corpora>")
    return [value] if isinstance(value, str) else list(value)


def _pick(ids: np.ndarray, count: int, rng: np.random.Generator) -> list[str]:
    return sorted(rng.choice(ids, size=count, replace=False).tolist())


def balanced_test(candidates: pd.DataFrame, label_column: str, balance: str, rng: np.random.Generator) -> tuple[list[str], dict[str, Any]]:
    """utt_ids of the balanced test set (see the module docstring) and how it was drawn."""
    classes = sorted(candidates[label_column].unique())
    if balance == "none":
        return candidates["utt_id"].tolist(), {"balance": "none"}
    if balance == "speaker_class":
        counts = pd.crosstab(candidates["speaker"], candidates[label_column]).reindex(columns=classes, fill_value=0)
        eligible = counts[(counts > 0).all(axis=1)]
        if not eligible.empty:
            k = int(eligible.to_numpy().min())
            chosen: list[str] = []
            for speaker in sorted(eligible.index):
                mine = candidates[candidates["speaker"] == speaker]
                for label in classes:
                    chosen += _pick(mine.loc[mine[label_column] == label, "utt_id"].to_numpy(), k, rng)
            return chosen, {"balance": "speaker_class", "per_speaker_and_class": k, "test_speakers_eligible": len(eligible)}
        balance, fallback = "class", True
    else:
        fallback = False
    if balance != "class":
        raise SplitError(f"unknown balance rule {balance!r}; choose one of {BALANCE_RULES}")
    m = int(candidates[label_column].value_counts().min())
    chosen = []
    for label in classes:
        of_class = candidates[candidates[label_column] == label]
        queues = {s: list(rng.permutation(g["utt_id"].to_numpy())) for s, g in of_class.groupby("speaker", sort=True)}
        order = list(rng.permutation(sorted(queues)))
        taken: list[str] = []
        while len(taken) < m:
            for speaker in order:
                if queues[speaker] and len(taken) < m:
                    taken.append(queues[speaker].pop())
        chosen += sorted(taken)
    info: dict[str, Any] = {"balance": "class", "per_class": m}
    if fallback:
        info["balance_fallback"] = "no test speaker has every shared class"
    return chosen, info


@PROTOCOLS.register("cross_corpus")
def cross_corpus(
    manifest: pd.DataFrame,
    *,
    label_column: str = "label",
    seed: int = 0,
    train: str | list[str] | None = None,
    test: str | list[str] | None = None,
    pool_train: bool = False,
    balance: str = "speaker_class",
    restrict_train_to_shared: bool = True,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
    test_set: str = "balanced",
    emobox_root: str | None = None,
) -> Split:
    """Train on ``train`` corpora, test on a balanced set of each ``test`` corpus."""
    if balance not in BALANCE_RULES:
        raise SplitError(f"unknown balance rule {balance!r}; choose one of {BALANCE_RULES}")
    if test_set not in TEST_SETS:
        raise SplitError(f"unknown test_set {test_set!r}; choose one of {TEST_SETS}")
    rng = rng_for(seed)
    rows = labelled_rows(manifest, label_column)
    train_corpora, test_corpora = _as_list(train, "train"), _as_list(test, "test")
    present = set(rows["corpus"])
    missing = sorted(set(train_corpora + test_corpora) - present)
    if missing:
        raise SplitError(f"corpora {missing} have no rows with {label_column!r} in the manifest; present: {sorted(present)}")
    if pool_train:
        pairs = [([c for c in train_corpora if c != t], t) for t in test_corpora]
    else:
        pairs = [([s], t) for s in train_corpora for t in test_corpora if s != t]
    pairs = [(sources, target) for sources, target in pairs if sources]
    if not pairs:
        raise SplitError(f"cross_corpus: no (train, test) pair of different corpora in train={train_corpora} test={test_corpora}")
    folds = []
    for sources, target in pairs:
        target_rows = target_all = rows[rows["corpus"] == target]
        pool = rows[rows["corpus"].isin(sources)]
        name = f"{'+'.join(sources)}_to_{target}"
        fixed = None
        if test_set == "emobox_track2":
            from polyemo.splits.emobox_official import track2_test_ids

            fixed, how = track2_test_ids(manifest, target, emobox_root)
            absent = sorted(set(fixed) - set(target_rows["utt_id"]))
            if absent:
                raise SplitError(f"cross_corpus {name}: {len(absent)} of EmoBox's {len(fixed)} test utterances have no "
                                 f"{label_column!r} in this manifest (a label set or limit drops them), e.g. {absent[:3]}")
            target_rows = target_rows[target_rows["utt_id"].isin(fixed)]
            untrained = sorted(set(target_rows[label_column]) - set(pool[label_column]))
            if untrained:
                raise SplitError(f"cross_corpus {name}: EmoBox's test set has classes {untrained} that the training corpora lack")
        shared = sorted(set(pool[label_column]) & set(target_rows[label_column]))
        if not shared:
            raise SplitError(f"cross_corpus {name}: the corpora share no class of {label_column!r}")
        if restrict_train_to_shared:
            pool = pool[pool[label_column].isin(shared)]
        pool, dropped = drop_touching(pool, target_all)
        candidates = target_rows[target_rows[label_column].isin(shared)]
        if fixed is not None:  # EmoBox's set, exactly as published
            test_ids = fixed
        else:
            candidates = candidates[~(candidates["content_hash"].notna() & candidates["content_hash"].duplicated())]
            test_ids, how = balanced_test(candidates, label_column, balance, rng)
        folds.append(make_fold(
            name, pool, candidates[candidates["utt_id"].isin(test_ids)],
            label_column=label_column, validation_fraction=validation_fraction, rng=rng,
            holdout={"corpus": [target]},
            info={"train_corpora": sources, "test_corpus": target, "shared_classes": shared, **how, **dropped},
        ))
    params = {
        "train": train_corpora, "test": test_corpora, "pool_train": pool_train, "balance": balance,
        "restrict_train_to_shared": restrict_train_to_shared, "validation_fraction": validation_fraction,
    }
    if test_set != "balanced":  # only then, so that splits made before this option keep their hash
        params["test_set"] = test_set
    return build_split(manifest, "cross_corpus", folds, seed=seed, label_column=label_column, speaker_independent=True, params=params)
