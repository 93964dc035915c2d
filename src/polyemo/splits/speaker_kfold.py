"""Speaker-independent k-fold: scikit-learn's StratifiedGroupKFold over speaker groups.

Groups are the speaker/recording groups of :mod:`polyemo.splits.core`; folds are
stratified by label as far as whole groups allow (shuffled with the seed).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from polyemo.splits import PROTOCOLS
from polyemo.splits.core import (
    DEFAULT_VALIDATION_FRACTION,
    build_split,
    connected_groups,
    labelled_rows,
    make_fold,
    rng_for,
    select_corpus,
)
from polyemo.splits.model import Split, SplitError


@PROTOCOLS.register("speaker_kfold", "kfold")
def speaker_kfold(
    manifest: pd.DataFrame,
    *,
    label_column: str = "label",
    seed: int = 0,
    k: int = 5,
    corpus: str | None = None,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
) -> Split:
    """``k`` speaker-independent folds, label-stratified where the groups allow."""
    rng = rng_for(seed)
    rows = labelled_rows(select_corpus(manifest, corpus), label_column)
    groups = connected_groups(rows)
    n_groups = len(np.unique(groups))
    if not isinstance(k, int) or k < 2:
        raise SplitError(f"k must be an integer >= 2, got {k!r}")
    if n_groups < k:
        raise SplitError(f"speaker_kfold with k={k} needs at least {k} speaker groups, found {n_groups}")
    labels = pd.factorize(rows[label_column], sort=True)[0]
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=int(seed))
    folds = []
    with warnings.catch_warnings():
        # "The least populated class has only n members": expected with few speakers.
        warnings.simplefilter("ignore", UserWarning)
        for index, (_, test_index) in enumerate(splitter.split(np.zeros(len(rows)), labels, groups), start=1):
            in_test = np.zeros(len(rows), dtype=bool)
            in_test[test_index] = True
            folds.append(make_fold(
                f"fold_{index}", rows[~in_test], rows[in_test],
                label_column=label_column, validation_fraction=validation_fraction, rng=rng,
            ))
    params = {"k": k, "corpus": corpus, "validation_fraction": validation_fraction}
    return build_split(manifest, "speaker_kfold", folds, seed=seed, label_column=label_column, speaker_independent=True, params=params)
