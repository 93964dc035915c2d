"""Leave one speaker out: one fold per speaker group, every other speaker trains.

Speakers joined by a shared recording (see :mod:`polyemo.splits.core`) are left out
together, so a corpus with such a pair has one fold fewer than speakers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

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
from polyemo.splits.model import Fold, Split, SplitError


def loso_folds(
    rows: pd.DataFrame,
    *,
    label_column: str,
    validation_fraction: float,
    rng: np.random.Generator,
    info: dict[str, Any] | None = None,
) -> list[Fold]:
    """One fold per speaker group of ``rows`` (labelled rows sorted by utt_id)."""
    groups = connected_groups(rows)
    if len(np.unique(groups)) < 2:
        raise SplitError(f"leave-one-speaker-out needs at least 2 speaker groups, found {len(np.unique(groups))}")
    folds = []
    for index, group in enumerate(np.unique(groups), start=1):
        in_test = groups == group
        folds.append(make_fold(
            f"fold_{index}", rows[~in_test], rows[in_test],
            label_column=label_column, validation_fraction=validation_fraction, rng=rng, info=info,
        ))
    return folds


@PROTOCOLS.register("loso", "leave_one_speaker_out")
def loso(
    manifest: pd.DataFrame,
    *,
    label_column: str = "label",
    seed: int = 0,
    corpus: str | None = None,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
) -> Split:
    """Leave-one-speaker-out folds over all rows (or one ``corpus``) with a label."""
    rows = labelled_rows(select_corpus(manifest, corpus), label_column)
    folds = loso_folds(rows, label_column=label_column, validation_fraction=validation_fraction, rng=rng_for(seed))
    params = {"corpus": corpus, "validation_fraction": validation_fraction}
    return build_split(manifest, "loso", folds, seed=seed, label_column=label_column, speaker_independent=True, params=params)
