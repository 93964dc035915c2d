"""Prepare every known corpus found below one folder, resumably."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pandas as pd

from polyemo import manifest as mf
from polyemo.io import read_table, write_table

# Recipes for users' own data need options and cannot be recognised from a folder name.
GENERIC_RECIPES = {"folder", "table"}
FAILURE_COLUMNS = ["corpus", "path", "error"]


def _newest_mtime(folder: Path) -> float:
    """Newest modification time of the folder tree (folders and files), so an added,
    removed or rewritten file makes the manifest stale."""
    newest = folder.stat().st_mtime
    for dirpath, _, filenames in os.walk(folder):
        newest = max(newest, os.stat(dirpath).st_mtime)
        for name in filenames:
            newest = max(newest, os.stat(os.path.join(dirpath, name)).st_mtime)
    return newest


def _is_current(manifest_path: Path, folder: Path) -> bool:
    return manifest_path.exists() and manifest_path.stat().st_mtime > _newest_mtime(folder)


def prepare_all(
    root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    force: bool = False,
    workers: int = 1,
    show_progress: bool = True,
) -> pd.DataFrame:
    """Prepare every subfolder of ``root`` named after a known recipe (``emodb/``, ...).

    Writes ``<out>/<corpus>.parquet`` and ``.csv`` per corpus, ``<out>/all.parquet`` and
    ``.csv`` with every corpus, and ``<out>/failures.csv`` (corpus, path, error: files that
    could not be decoded, or a whole corpus whose recipe failed). A corpus whose manifest
    is newer than everything in its folder is not prepared again unless ``force``; one
    failing corpus never stops the others. Returns one summary row per subfolder.
    """
    from polyemo.corpora import RECIPES, prepare

    root, out_dir = Path(root), Path(out_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    summary, manifests, failures = [], [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        corpus = folder.name.lower()
        if corpus in GENERIC_RECIPES or corpus not in RECIPES:
            summary.append({"corpus": folder.name, "status": "skipped: no recipe of this name", "files": 0, "failures": 0, "seconds": 0.0})
            continue
        target = out_dir / f"{corpus}.parquet"
        failure_file = out_dir / f"{corpus}.failures.csv"
        started = time.perf_counter()
        if not force and _is_current(target, folder):
            manifest = mf.load(target)
            failed = read_table(failure_file) if failure_file.exists() else pd.DataFrame(columns=["path", "error"])
            status = "up to date"
        else:
            try:
                manifest, failed = prepare(corpus, folder, workers=workers, show_progress=show_progress)
            except Exception as exc:  # a broken corpus is reported, the others still run
                failures.append({"corpus": corpus, "path": str(folder), "error": f"{type(exc).__name__}: {exc}"})
                summary.append({"corpus": corpus, "status": "failed", "files": 0, "failures": 1,
                                "seconds": time.perf_counter() - started})
                continue
            write_table(failure_file, failed)  # before the manifest: a current manifest implies its failures
            mf.save(manifest, target)
            status = "prepared"
        manifests.append(manifest)
        failures.extend({"corpus": corpus, "path": p, "error": e} for p, e in zip(failed["path"], failed["error"]))
        summary.append({"corpus": corpus, "status": status, "files": len(manifest), "failures": len(failed),
                        "seconds": time.perf_counter() - started})
    if manifests:
        mf.save(mf.concat(manifests), out_dir / "all.parquet")
    write_table(out_dir / "failures.csv", pd.DataFrame(failures, columns=FAILURE_COLUMNS))
    return pd.DataFrame(summary, columns=["corpus", "status", "files", "failures", "seconds"])
