"""What every protocol shares: labelled rows, leak-proof groups, validation carving.

Groups. Two rows belong to one group when they share a speaker or a ``content_hash``
(identical decoded audio), transitively: the connected components of the graph whose
edges join rows to their speaker and to their hash (a union-find over speakers and
hashes, computed with ``scipy.sparse.csgraph.connected_components``). Protocols only ever
move whole groups, so a speaker never straddles train / validation / test and neither
does a recording. If two speakers share a recording (baved: every file of speaker 46
reappears as speaker 53) the two speakers form one group and always land on one side.
Protocols that are not speaker-independent (EmoBox's random regime) use hash groups only.

Validation. Always carved from the training groups of a fold, never from test rows:
about ``validation_fraction`` of the training speakers (at least one as soon as there are
two training speakers, never all of them). Among ``VALIDATION_DRAWS`` seeded draws of
whole groups, the draw kept is the one that (in this order) leaves every training class
in train, covers most classes in validation, covers most corpora, and comes closest to the
wanted number of speakers. EmoBox has no validation set (it selects on test); we always
have one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from polyemo.splits.model import Fold, Split, SplitError, manifest_sha256

VALIDATION_DRAWS = 32
DEFAULT_VALIDATION_FRACTION = 0.2


def labelled_rows(manifest: pd.DataFrame, label_column: str) -> pd.DataFrame:
    """Rows with a value in ``label_column``, sorted by utt_id; errors name what is missing."""
    for column in ("utt_id", "speaker", "content_hash", "corpus", "language"):
        if column not in manifest.columns:
            raise SplitError(f"manifest lacks the column {column!r}")
    if label_column not in manifest.columns:
        raise SplitError(f"manifest has no label column {label_column!r}; columns: {list(manifest.columns)}")
    if manifest["utt_id"].duplicated().any():
        dup = manifest["utt_id"][manifest["utt_id"].duplicated()].tolist()[:3]
        raise SplitError(f"manifest has duplicate utt_ids, e.g. {dup}")
    has_label = manifest[label_column].notna() & (manifest[label_column].astype("string").str.strip() != "")
    rows = manifest[has_label.fillna(False).astype(bool)]
    if rows.empty:
        corpora = sorted(manifest["corpus"].dropna().unique())
        raise SplitError(
            f"no row of the manifest (corpora {corpora}) has a value in {label_column!r}; "
            "for corpora without categories (baved) use label_column='arousal_level'"
        )
    rows = rows.copy()
    rows[label_column] = rows[label_column].astype("string")
    return rows.sort_values("utt_id", kind="stable").reset_index(drop=True)


def connected_groups(frame: pd.DataFrame, columns: Sequence[str] = ("speaker", "content_hash")) -> np.ndarray:
    """Group id per row: rows sharing a value in any of ``columns`` are joined, transitively.

    Missing values join nothing. Ids are numbered in order of first appearance, so they are
    deterministic for a given row order.
    """
    n = len(frame)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    sources, targets, offset = [], [], n
    for column in columns:
        codes, uniques = pd.factorize(frame[column], use_na_sentinel=True)
        known = codes >= 0
        sources.append(np.nonzero(known)[0])
        targets.append(codes[known] + offset)
        offset += len(uniques)
    src, dst = np.concatenate(sources), np.concatenate(targets)
    graph = coo_matrix((np.ones(len(src), dtype=np.int8), (src, dst)), shape=(offset, offset))
    _, component = connected_components(graph, directed=False)
    return pd.factorize(component[:n])[0]


@dataclass(frozen=True)
class Groups:
    """Per-row group ids and per-group facts, as arrays indexed by group id."""

    ids: np.ndarray  # group id of each row
    n_speakers: np.ndarray  # distinct speakers per group
    rows: np.ndarray  # rows per group
    class_counts: np.ndarray  # (groups, classes) row counts
    corpora: np.ndarray  # (groups, corpora) bool: group has rows of that corpus
    classes: list[str]  # column names of class_counts, sorted

    @property
    def count(self) -> int:
        return len(self.rows)

    @property
    def majority(self) -> np.ndarray:
        """Class index of each group's most frequent class (ties: alphabetically first)."""
        return self.class_counts.argmax(axis=1)


def make_groups(frame: pd.DataFrame, label_column: str, columns: Sequence[str] = ("speaker", "content_hash")) -> Groups:
    ids = connected_groups(frame, columns)
    n_groups = int(ids.max()) + 1 if len(ids) else 0
    speaker_codes = pd.factorize(frame["speaker"])[0]
    pairs = np.unique(np.stack([ids, speaker_codes]), axis=1)
    label_codes, classes = pd.factorize(frame[label_column], sort=True)
    class_counts = np.zeros((n_groups, len(classes)), dtype=np.int64)
    np.add.at(class_counts, (ids, label_codes), 1)
    corpus_codes, corpora = pd.factorize(frame["corpus"])
    corpus_any = np.zeros((n_groups, len(corpora)), dtype=bool)
    corpus_any[ids, corpus_codes] = True
    return Groups(
        ids=ids,
        n_speakers=np.bincount(pairs[0], minlength=n_groups),
        rows=np.bincount(ids, minlength=n_groups),
        class_counts=class_counts,
        corpora=corpus_any,
        classes=[str(c) for c in classes],
    )


def carve_validation(
    train: pd.DataFrame,
    label_column: str,
    fraction: float,
    rng: np.random.Generator,
    speaker_independent: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a fold's training rows into (train, validation) along whole groups."""
    if not 0.0 < fraction < 1.0:
        raise SplitError(f"validation_fraction must be between 0 and 1 (exclusive), got {fraction}")
    if not speaker_independent:
        return _carve_by_hash(train, label_column, fraction, rng)
    n_speakers = train["speaker"].nunique()
    if n_speakers < 2:
        return train, train.iloc[:0]
    groups = make_groups(train, label_column)
    wanted = int(min(max(round(fraction * n_speakers), 1), n_speakers - 1))
    has_class = groups.class_counts > 0
    best_key, best_choice = None, None
    for _ in range(VALIDATION_DRAWS):
        chosen = np.zeros(groups.count, dtype=bool)
        taken = 0
        for g in rng.permutation(groups.count):
            if taken + groups.n_speakers[g] <= wanted:
                chosen[g] = True
                taken += int(groups.n_speakers[g])
        if not chosen.any():
            # Every group is bigger than the target: take the smallest that leaves training speakers.
            fits = np.nonzero(groups.n_speakers < n_speakers)[0]
            if len(fits) == 0:
                raise SplitError(
                    f"cannot carve a speaker-independent validation set: the {n_speakers} training speakers "
                    "are all joined by shared recordings into one group"
                )
            smallest = fits[np.lexsort((groups.rows[fits], groups.n_speakers[fits]))[0]]
            chosen[smallest] = True
            taken = int(groups.n_speakers[smallest])
        key = (
            int(has_class[~chosen].any(axis=0).sum()),
            int(has_class[chosen].any(axis=0).sum()),
            int(groups.corpora[chosen].any(axis=0).sum()),
            -abs(taken - wanted),
            -abs(groups.rows[chosen].sum() / len(train) - fraction),
        )
        if best_key is None or key > best_key:
            best_key, best_choice = key, chosen
    in_validation = best_choice[groups.ids]
    return train[~in_validation], train[in_validation]


def _carve_by_hash(train: pd.DataFrame, label_column: str, fraction: float, rng: np.random.Generator):
    """Stratified by class, whole content-hash groups (speakers may be shared by design)."""
    groups = make_groups(train, label_column, ("content_hash",))
    if groups.count < 2:
        return train, train.iloc[:0]
    chosen = np.zeros(groups.count, dtype=bool)
    majority = groups.majority
    for label_index in range(len(groups.classes)):
        members = rng.permutation(np.nonzero(majority == label_index)[0])
        chosen[members[: int(round(fraction * len(members)))]] = True
    if not chosen.any():
        chosen[int(rng.integers(groups.count))] = True
    in_validation = chosen[groups.ids]
    return train[~in_validation], train[in_validation]


def make_fold(
    name: str,
    train: pd.DataFrame,
    test: pd.DataFrame,
    *,
    label_column: str,
    validation_fraction: float,
    rng: np.random.Generator,
    speaker_independent: bool = True,
    holdout: dict[str, list[str]] | None = None,
    info: dict[str, Any] | None = None,
) -> Fold:
    """A fold from its training pool and test rows; validation is carved from the pool."""
    if test.empty:
        raise SplitError(f"{name}: the test part is empty")
    if train.empty:
        raise SplitError(f"{name}: the training part is empty")
    train, validation = carve_validation(train, label_column, validation_fraction, rng, speaker_independent)
    details = {
        "test_speakers": sorted(test["speaker"].unique().tolist()),
        "validation_speakers": sorted(validation["speaker"].unique().tolist()),
    }
    details.update(info or {})
    return Fold(
        name=name,
        train=train["utt_id"].tolist(),
        validation=validation["utt_id"].tolist(),
        test=test["utt_id"].tolist(),
        holdout=holdout or {},
        info=details,
    )


def build_split(
    manifest: pd.DataFrame,
    protocol: str,
    folds: list[Fold],
    *,
    seed: int,
    label_column: str,
    speaker_independent: bool,
    params: dict[str, Any],
) -> Split:
    return Split(
        protocol=protocol,
        params=params,
        seed=seed,
        label_column=label_column,
        speaker_independent=speaker_independent,
        manifest_sha256=manifest_sha256(manifest),
        folds=folds,
    )


def rng_for(seed: int) -> np.random.Generator:
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise SplitError(f"seed must be an integer, got {seed!r}")
    return np.random.default_rng(int(seed))


def select_corpus(manifest: pd.DataFrame, corpus: str | None) -> pd.DataFrame:
    """The rows of one corpus (all rows when ``corpus`` is None)."""
    if corpus is None:
        return manifest
    rows = manifest[manifest["corpus"] == corpus]
    if rows.empty:
        raise SplitError(f"no rows of corpus {corpus!r}; the manifest holds {sorted(manifest['corpus'].dropna().unique())}")
    return rows


def drop_touching(pool: pd.DataFrame, test: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Remove pool rows that share a speaker or a content hash with the test rows."""
    same_speaker = pool["speaker"].isin(set(test["speaker"]))
    same_audio = pool["content_hash"].isin(set(test["content_hash"].dropna()))
    dropped = {
        "dropped_train_same_speaker": int(same_speaker.sum()),
        "dropped_train_same_audio": int((same_audio & ~same_speaker).sum()),
    }
    return pool[~(same_speaker | same_audio)], dropped
