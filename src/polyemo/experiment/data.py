"""An experiment's rows: corpora -> one manifest with a ``target`` column, optionally limited.

The ``target`` column holds each row's class under the experiment's label set (or its
arousal level); rows without one are dropped. The split protocols stratify on it.
"""

from __future__ import annotations

import os
import zlib

import numpy as np
import pandas as pd

from polyemo import manifest as mf
from polyemo.experiment.config import AROUSAL_LEVELS, ConfigError, CorpusSpec, ExperimentConfig, LimitSpec

TARGET_COLUMN = "target"


# Prepared manifests of this process, keyed by corpus, folder and the folder's newest change:
# a grid prepares each corpus once, and any change to its files prepares it again.
_PREPARED: dict[tuple[str, str, float], tuple[pd.DataFrame, pd.DataFrame]] = {}


def _tree_stamp(folder) -> float:
    """Newest modification time in a folder tree (files and folders)."""
    newest = folder.stat().st_mtime
    for dirpath, _, filenames in os.walk(folder):
        newest = max(newest, os.stat(dirpath).st_mtime, *(os.stat(os.path.join(dirpath, f)).st_mtime for f in filenames))
    return newest


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
    key = (spec.name, str(spec.root.resolve()), _tree_stamp(spec.root))
    if key not in _PREPARED:
        _PREPARED[key] = prepare(spec.name, spec.root, show_progress=show_progress)
    manifest, failures = (frame.copy() for frame in _PREPARED[key])
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


def balanced_pick(rows: pd.DataFrame, count: int, seed: int, salt: str = "") -> pd.DataFrame:
    """``count`` rows spread evenly over classes and then over speakers (seeded greedy):
    each step takes the class picked least so far, and in it a row of a speaker who has
    no row of that class yet and the fewest rows so far, so a small subset has every class,
    each class from as many speakers as possible, and as many speakers as it can.
    ``salt`` (e.g. the speaker) varies the draw between groups of the same seed."""
    if count >= len(rows):
        return rows
    rng = np.random.default_rng([seed, zlib.crc32(salt.encode())])
    order = rng.permutation(len(rows))
    classes = rows[TARGET_COLUMN].astype(str).to_numpy()[order]
    speakers = pd.factorize(rows["speaker"].astype(str).to_numpy()[order])[0]
    remaining = {c: list(np.flatnonzero(classes == c)) for c in sorted(set(classes))}
    class_used = {c: 0 for c in remaining}
    priority = dict(zip(remaining, rng.permutation(len(remaining))))  # ties between classes
    speaker_used = np.zeros(speakers.max() + 1, dtype=np.int64)
    pair_used = {c: np.zeros_like(speaker_used) for c in remaining}  # rows per (class, speaker)
    chosen: list[int] = []
    while len(chosen) < count:
        cls = min((c for c in remaining if remaining[c]), key=lambda c: (class_used[c], priority[c]))
        candidates = remaining[cls]
        who = speakers[candidates]
        # A speaker new to this class first, then the speaker with the fewest rows so far;
        # among equals the first in the shuffled order.
        best = int(np.argmin(pair_used[cls][who] * (len(speakers) + 1) + speaker_used[who]))
        position = candidates.pop(best)
        chosen.append(int(order[position]))
        class_used[cls] += 1
        speaker_used[speakers[position]] += 1
        pair_used[cls][speakers[position]] += 1
    return rows.iloc[sorted(chosen)]


def apply_limit(frame: pd.DataFrame, limit: LimitSpec, seed: int) -> pd.DataFrame:
    """At most ``per_speaker`` rows per speaker, then ``per_corpus`` per corpus, spread over
    classes and speakers (:func:`balanced_pick`)."""
    if not limit.active:
        return frame
    kept = []
    for corpus, rows in frame.groupby("corpus", sort=True):
        if limit.per_speaker is not None:
            rows = pd.concat([balanced_pick(mine, limit.per_speaker, seed, str(speaker))
                              for speaker, mine in rows.groupby("speaker", sort=True)])
        if limit.per_corpus is not None:
            rows = balanced_pick(rows, limit.per_corpus, seed, str(corpus))
        kept.append(rows)
    return frame.loc[sorted(pd.concat(kept).index)].reset_index(drop=True)


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
