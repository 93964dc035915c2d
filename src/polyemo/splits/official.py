"""The corpus' own train / validation / test partition (manifest column ``official_split``).

Values are read case-insensitively; ``dev``, ``val``, ``valid`` and ``development`` mean
validation. Rows of train or validation whose audio also occurs in test (same
``content_hash``) are dropped, as are validation rows whose audio occurs in train. When
the corpus defines no validation part it is carved from the training speakers. The split
counts as speaker-independent only if the official parts share no speaker.
"""

from __future__ import annotations

import pandas as pd

from polyemo.splits import PROTOCOLS
from polyemo.splits.core import (
    DEFAULT_VALIDATION_FRACTION,
    build_split,
    carve_validation,
    labelled_rows,
    rng_for,
    select_corpus,
)
from polyemo.splits.model import Fold, Split, SplitError

PART_NAMES = {
    "train": "train", "training": "train",
    "validation": "validation", "valid": "validation", "val": "validation", "dev": "validation", "development": "validation",
    "test": "test", "testing": "test", "eval": "test", "evaluation": "test",
}


@PROTOCOLS.register("official")
def official(
    manifest: pd.DataFrame,
    *,
    label_column: str = "label",
    seed: int = 0,
    corpus: str | None = None,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
) -> Split:
    """One fold from the ``official_split`` column; error if the manifest has none."""
    rows = labelled_rows(select_corpus(manifest, corpus), label_column)
    if "official_split" not in rows.columns or rows["official_split"].isna().all():
        corpora = sorted(rows["corpus"].unique())
        raise SplitError(f"no official split: the 'official_split' column of {corpora} is absent or empty; use another protocol")
    rows = rows[rows["official_split"].notna()].copy()
    raw = rows["official_split"].astype(str).str.strip().str.lower()
    unknown = sorted(set(raw) - set(PART_NAMES))
    if unknown:
        raise SplitError(f"official_split has unknown values {unknown}; expected train/validation/test")
    part = raw.map(PART_NAMES)
    test = rows[part == "test"]
    if test.empty:
        raise SplitError("official_split has no 'test' rows")
    test_hashes = set(test["content_hash"].dropna())
    train = rows[(part == "train") & ~rows["content_hash"].isin(test_hashes)]
    validation = rows[(part == "validation") & ~rows["content_hash"].isin(test_hashes)]
    dropped_train = int(((part == "train") & rows["content_hash"].isin(test_hashes)).sum())
    dropped_val = int(((part == "validation") & rows["content_hash"].isin(test_hashes)).sum())
    repeats = validation["content_hash"].isin(set(train["content_hash"].dropna()))
    dropped_val += int(repeats.sum())
    validation = validation[~repeats]
    speaker_sets = [set(train["speaker"]), set(validation["speaker"]), set(test["speaker"])]
    speaker_independent = not (
        speaker_sets[0] & speaker_sets[2] or speaker_sets[1] & speaker_sets[2] or speaker_sets[0] & speaker_sets[1]
    )
    carved = validation.empty
    if carved:
        train, validation = carve_validation(train, label_column, validation_fraction, rng_for(seed), speaker_independent)
    fold = Fold(
        name="official",
        train=train["utt_id"].tolist(),
        validation=validation["utt_id"].tolist(),
        test=test["utt_id"].tolist(),
        info={
            "test_speakers": sorted(test["speaker"].unique().tolist()),
            "validation_carved": carved,
            "dropped_train_same_audio_as_test": dropped_train,
            "dropped_validation_repeated_audio": dropped_val,
        },
    )
    params = {"corpus": corpus, "validation_fraction": validation_fraction}
    return build_split(manifest, "official", [fold], seed=seed, label_column=label_column, speaker_independent=speaker_independent, params=params)
