"""An experiment's rows: corpora -> one manifest with a ``target`` column, optionally limited.

The ``target`` column holds each row's class under the experiment's label set (or its
arousal level); rows without one are dropped. The split protocols stratify on it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from polyemo import manifest as mf
from polyemo.experiment.config import AROUSAL_LEVELS, ConfigError, CorpusSpec, ExperimentConfig, LimitSpec

TARGET_COLUMN = "target"


def load_corpus(spec: CorpusSpec, show_progress: bool = False) -> pd.DataFrame:
    """The manifest of one corpus: prepared by its recipe (content hashes are cached), or read."""
    if spec.manifest is not None:
        try:
            return mf.load(spec.manifest)
        except (FileNotFoundError, ValueError) as error:
            raise ConfigError(f"corpus manifest {spec.manifest}: {error}") from None
    from polyemo.corpora import prepare

    if spec.root is None or not spec.root.is_dir():
        raise ConfigError(
            f"corpus {spec.name!r}: no folder {spec.root} (set corpora_root in the experiment file, "
            "the corpus' own root, or $POLYEMO_CORPORA)")
    manifest, failures = prepare(spec.name, spec.root, show_progress=show_progress)
    if len(failures):
        # Undecodable files are left out of the manifest by the recipe; say how many.
        manifest.attrs["failures"] = failures
    return manifest


def classes_of(config: ExperimentConfig, manifest: pd.DataFrame) -> list[str]:
    """The experiment's classes in label-set order, restricted to those present in the data."""
    present = set(manifest[TARGET_COLUMN].dropna())
    if config.target == "arousal_level":
        order = list(AROUSAL_LEVELS) + sorted(present - set(AROUSAL_LEVELS))
    else:
        order = config.label_set().classes
    return [c for c in order if c in present]


def add_target(config: ExperimentConfig, manifest: pd.DataFrame) -> pd.DataFrame:
    """Rows that have a class under the experiment's target, with that class in ``target``."""
    frame = manifest.copy()
    if config.target == "arousal_level":
        values = frame["arousal_level"].astype("string").str.strip().str.lower()
        values = values.where(values != "", pd.NA)
    else:
        labels = config.label_set()
        values = pd.Series(
            [labels.map(v) if isinstance(v, str) else None for v in frame["label"].astype(object).where(frame["label"].notna(), None)],
            index=frame.index, dtype="object")
    frame[TARGET_COLUMN] = pd.Series(values, index=frame.index).astype("string")
    return frame[frame[TARGET_COLUMN].notna()].reset_index(drop=True)


def spread_order(frame: pd.DataFrame, by: list[str], seed: int) -> np.ndarray:
    """Row positions ordered so that a prefix spreads evenly over the groups of ``by``:
    first one row of every group, then a second of every group, and so on (seeded)."""
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(len(frame))
    ordered = frame.iloc[shuffled]
    rank = ordered.groupby(by, sort=False, dropna=False).cumcount().to_numpy()
    # Ties on rank keep the shuffled order (stable sort).
    return shuffled[np.argsort(rank, kind="stable")]


def apply_limit(frame: pd.DataFrame, limit: LimitSpec, seed: int) -> pd.DataFrame:
    """At most ``per_speaker`` rows per speaker, then ``per_corpus`` per corpus, spread over
    speakers and classes so that small subsets still have every class and many speakers."""
    if not limit.active:
        return frame
    keep: list[int] = []
    for _, rows in frame.groupby("corpus", sort=True):
        rows = rows.copy()
        if limit.per_speaker is not None:
            chosen = []
            for _, mine in rows.groupby("speaker", sort=True):
                order = spread_order(mine, [TARGET_COLUMN], seed)
                chosen.append(mine.iloc[order[: limit.per_speaker]])
            rows = pd.concat(chosen)
        if limit.per_corpus is not None and len(rows) > limit.per_corpus:
            # Class first, then speaker: every class appears before any class gets a second row.
            order = spread_order(rows, [TARGET_COLUMN], seed)
            by_class = rows.iloc[order]
            speaker_rank = by_class.groupby(["speaker", TARGET_COLUMN], sort=False).cumcount().to_numpy()
            class_rank = by_class.groupby(TARGET_COLUMN, sort=False).cumcount().to_numpy()
            # Prefer rows whose (speaker, class) cell is not yet used, then fill by class rank.
            final = np.lexsort((class_rank, speaker_rank))
            rows = by_class.iloc[final[: limit.per_corpus]]
        keep.extend(rows.index.tolist())
    return frame.loc[sorted(keep)].reset_index(drop=True)


def experiment_manifest(config: ExperimentConfig, show_progress: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The experiment's rows (with ``target``) and the files the recipes could not read."""
    frames, failures = [], []
    for spec in config.corpora:
        corpus = load_corpus(spec, show_progress)
        if "failures" in corpus.attrs:
            failed = corpus.attrs.pop("failures")
            failures.append(failed.assign(corpus=spec.label))
        frames.append(corpus)
    manifest = mf.concat(frames) if len(frames) > 1 else frames[0]
    labelled = add_target(config, manifest)
    if labelled.empty:
        what = "an arousal level" if config.target == "arousal_level" else f"a label in the set {config.label_set().classes}"
        raise ConfigError(f"experiment {config.name!r}: no row of {[c.label for c in config.corpora]} has {what}")
    labelled = apply_limit(labelled, config.limit, config.seed)
    failed = pd.concat(failures, ignore_index=True) if failures else pd.DataFrame(columns=["corpus", "path", "error"])
    return labelled, failed
