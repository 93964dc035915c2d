"""The manifest: one table per dataset, one row per utterance, the same columns everywhere.

Columns (``COLUMNS``): utt_id, path (absolute), corpus, language (ISO 639-1), speaker
(corpus-prefixed, globally unique), gender (m/f/NA), label_raw (the corpus' own label),
label (canonical name, NA when the corpus has no category, e.g. baved), duration (s),
text, content_hash (of the decoded 16 kHz PCM), and the optional targets arousal, valence,
dominance (floats) and arousal_level (low/neutral/high), plus official_split (train/
validation/test where a corpus defines it) and session.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from polyemo.audio import AudioError, content_hash
from polyemo.io import read_table, write_table
from polyemo.paths import user_cache_dir

REQUIRED = [
    "utt_id", "path", "corpus", "language", "speaker", "gender",
    "label_raw", "label", "duration", "text", "content_hash",
]
OPTIONAL = ["arousal", "valence", "dominance", "arousal_level", "official_split", "session"]
COLUMNS = REQUIRED + OPTIONAL
FLOAT_COLUMNS = ["duration", "arousal", "valence", "dominance"]


class ManifestError(ValueError):
    pass


def empty() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="float64" if c in FLOAT_COLUMNS else "string") for c in COLUMNS})


def normalise_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Add missing optional columns, order columns, fix dtypes."""
    frame = frame.copy()
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise ManifestError(f"manifest lacks required columns: {missing}")
    for column in OPTIONAL:
        if column not in frame.columns:
            frame[column] = np.nan if column in FLOAT_COLUMNS else pd.NA
    extra = [c for c in frame.columns if c not in COLUMNS]
    frame = frame[COLUMNS + extra]
    for column in COLUMNS:
        if column in FLOAT_COLUMNS:
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
        else:
            frame[column] = frame[column].astype("string")
    return frame.reset_index(drop=True)


def validate(frame: pd.DataFrame, source: str = "manifest") -> pd.DataFrame:
    """Check the schema and invariants; raise :class:`ManifestError` naming the bad rows."""
    frame = normalise_frame(frame)
    dup = frame["utt_id"][frame["utt_id"].duplicated()]
    if len(dup):
        raise ManifestError(f"{source}: duplicate utt_id values, e.g. {list(dup[:5])}")
    for column in ("utt_id", "path", "corpus", "speaker"):
        bad = frame.index[frame[column].isna() | (frame[column] == "")]
        if len(bad):
            raise ManifestError(f"{source}: row {int(bad[0])} has an empty {column!r}")
    return frame


def save(frame: pd.DataFrame, target: str | os.PathLike[str]) -> list[Path]:
    """Save as Parquet and CSV side by side (``x.parquet`` and ``x.csv``); returns both paths."""
    target = Path(target)
    stem = target.with_suffix("") if target.suffix in (".parquet", ".csv") else target
    frame = validate(frame, str(target))
    paths = [stem.with_suffix(".parquet"), stem.with_suffix(".csv")]
    for path in paths:
        write_table(path, frame)
    return paths


def load(source: str | os.PathLike[str]) -> pd.DataFrame:
    """Load a manifest (Parquet or CSV) written by :func:`save`."""
    return validate(read_table(source), str(source))


def concat(frames: Iterable[pd.DataFrame]) -> pd.DataFrame:
    return validate(pd.concat([normalise_frame(f) for f in frames], ignore_index=True))


# --- content hashes, cached by (path, size, mtime) so re-preparing is fast -----------------

class HashCache:
    """A small SQLite table of content hashes and durations keyed by file identity."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path else user_cache_dir() / "content_hashes.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS hashes (path TEXT, size INTEGER, mtime_ns INTEGER,"
                " hash TEXT, duration REAL, PRIMARY KEY (path, size, mtime_ns))"
            )

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=60)

    def lookup(self, keys: list[tuple[str, int, int]]) -> dict[tuple[str, int, int], tuple[str, float]]:
        found: dict[tuple[str, int, int], tuple[str, float]] = {}
        with self._connect() as db:
            for chunk_start in range(0, len(keys), 500):
                chunk = keys[chunk_start : chunk_start + 500]
                paths = [k[0] for k in chunk]
                marks = ",".join("?" * len(paths))
                rows = db.execute(f"SELECT path, size, mtime_ns, hash, duration FROM hashes WHERE path IN ({marks})", paths)
                for path, size, mtime, digest, duration in rows:
                    found[(path, size, mtime)] = (digest, duration)
        return found

    def store(self, rows: list[tuple[str, int, int, str, float]]) -> None:
        with self._connect() as db:
            db.executemany("INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?, ?)", rows)


def _file_key(path: str) -> tuple[str, int, int]:
    stat = os.stat(path)
    return (os.path.abspath(path), stat.st_size, stat.st_mtime_ns)


def _hash_one(path: str) -> tuple[str, float] | str:
    try:
        digest = content_hash(path)
        duration = sf.info(path).duration
        return digest, float(duration)
    except AudioError as exc:
        return exc.reason
    except Exception as exc:  # report, never stop the batch
        return f"{type(exc).__name__}: {exc}"


def hash_files(
    paths: list[str],
    workers: int = 1,
    cache: HashCache | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[dict[str, tuple[str, float]], dict[str, str]]:
    """Content hash and duration for each path; returns (results, failures by path)."""
    cache = cache or HashCache()
    keys = {p: _file_key(p) for p in paths if os.path.exists(p)}
    failures = {p: "file not found" for p in paths if p not in keys}
    known = cache.lookup(list(keys.values()))
    results = {p: known[k] for p, k in keys.items() if k in known}
    todo = [p for p in keys if p not in results]
    if progress:
        progress(len(results))
    new_rows = []
    if todo:
        if workers > 1:
            with ProcessPoolExecutor(workers) as pool:
                outcomes = pool.map(_hash_one, todo, chunksize=16)
                pairs = zip(todo, outcomes)
                new_rows = _collect(pairs, keys, results, failures, progress)
        else:
            new_rows = _collect(((p, _hash_one(p)) for p in todo), keys, results, failures, progress)
        cache.store(new_rows)
    return results, failures


def _collect(pairs, keys, results, failures, progress) -> list[tuple[str, int, int, str, float]]:
    rows = []
    for path, outcome in pairs:
        if isinstance(outcome, str):
            failures[path] = outcome
        else:
            results[path] = outcome
            rows.append((*keys[path], *outcome))
        if progress:
            progress(1)
    return rows


def add_content_hashes(frame: pd.DataFrame, workers: int = 1, show_progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fill ``content_hash`` and ``duration`` from the audio; returns (manifest, failures).

    Files that cannot be decoded are left out of the manifest and listed in the failures
    table (path, error) so one bad file never stops the batch.
    """
    from rich.progress import Progress

    frame = frame.copy()
    paths = frame["path"].astype(str).tolist()
    with Progress(transient=True, disable=not show_progress) as bar:
        task = bar.add_task("hashing audio", total=len(paths))
        results, failures = hash_files(paths, workers=workers, progress=lambda n: bar.advance(task, n))
    ok = frame["path"].isin(list(results))
    frame.loc[ok, "content_hash"] = [results[p][0] for p in frame.loc[ok, "path"]]
    frame.loc[ok, "duration"] = [results[p][1] for p in frame.loc[ok, "path"]]
    failed = pd.DataFrame({"path": list(failures), "error": list(failures.values())}, columns=["path", "error"])
    return frame[ok].reset_index(drop=True), failed
