"""Zero-shot protocols: leave one corpus out, leave one language out.

One fold per target value (every corpus / language in the manifest, or those given as
``target``). Test: every labelled row of the target. Train and validation: the other rows,
minus any row that shares a speaker or identical audio (``content_hash``) with the test
rows, so nothing of the target is seen in training. Test rows whose class never occurs in
training are dropped (``drop_unseen_classes``), since no model could predict them; the
fold's ``info`` records how many rows each rule removed.
"""

from __future__ import annotations

import re

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


def _targets(rows: pd.DataFrame, column: str, target: str | list[str] | None) -> list[str]:
    present = sorted(rows[column].dropna().astype(str).unique())
    if len(present) < 2:
        raise SplitError(f"leave-one-{column}-out needs at least 2 values of {column!r} with labels, found {present}")
    if target is None:
        return present
    wanted = [target] if isinstance(target, str) else list(target)
    missing = [t for t in wanted if t not in present]
    if missing:
        raise SplitError(f"target {missing} not found in column {column!r}; values present: {present}")
    return sorted(set(wanted))


def holdout_split(
    manifest: pd.DataFrame,
    column: str,
    protocol: str,
    *,
    label_column: str,
    seed: int,
    target: str | list[str] | None,
    validation_fraction: float,
    drop_unseen_classes: bool,
) -> Split:
    rng = rng_for(seed)
    rows = labelled_rows(manifest, label_column)
    folds = []
    for value in _targets(rows, column, target):
        in_target = rows[column].astype(str) == value
        test = rows[in_target]
        pool, dropped = drop_touching(rows[~in_target], test)
        unseen = sorted(set(test[label_column]) - set(pool[label_column]))
        if drop_unseen_classes and unseen:
            test = test[~test[label_column].isin(unseen)]
            dropped["dropped_test_unseen_classes"] = unseen
        if test.empty:
            raise SplitError(f"{protocol}: target {value!r} has no test rows with a class seen in training")
        name = "holdout_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", value)
        folds.append(make_fold(
            name, pool, test, label_column=label_column, validation_fraction=validation_fraction, rng=rng,
            holdout={column: [value]}, info={"target": value, **dropped},
        ))
    params = {"target": target, "validation_fraction": validation_fraction, "drop_unseen_classes": drop_unseen_classes}
    return build_split(manifest, protocol, folds, seed=seed, label_column=label_column, speaker_independent=True, params=params)


@PROTOCOLS.register("leave_one_corpus_out", "loco")
def leave_one_corpus_out(
    manifest: pd.DataFrame,
    *,
    label_column: str = "label",
    seed: int = 0,
    target: str | list[str] | None = None,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
    drop_unseen_classes: bool = True,
) -> Split:
    """One fold per target corpus; no file of it (or identical to one of it) in training."""
    return holdout_split(
        manifest, "corpus", "leave_one_corpus_out", label_column=label_column, seed=seed, target=target,
        validation_fraction=validation_fraction, drop_unseen_classes=drop_unseen_classes,
    )


@PROTOCOLS.register("leave_one_language_out", "lolo")
def leave_one_language_out(
    manifest: pd.DataFrame,
    *,
    label_column: str = "label",
    seed: int = 0,
    target: str | list[str] | None = None,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
    drop_unseen_classes: bool = True,
) -> Split:
    """One fold per target language; no file of it (or identical to one of it) in training."""
    return holdout_split(
        manifest, "language", "leave_one_language_out", label_column=label_column, seed=seed, target=target,
        validation_fraction=validation_fraction, drop_unseen_classes=drop_unseen_classes,
    )
