"""Atomic file writes: finished work is never lost to a crash half-way through a write."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where tables are read: predicting a clip needs no pandas
    import pandas as pd


@contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; it replaces ``target`` only on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600 files; give finished files the usual umask-based mode.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def publish_folder(staging: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """Move a finished ``staging`` folder to ``target``; an existing ``target`` stays intact until
    the new one is in place (then it is removed)."""
    import shutil

    staging, target = Path(staging), Path(target)
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, target)


def write_text(target: str | os.PathLike[str], text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(target: str | os.PathLike[str], data: Any) -> None:
    write_text(target, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def write_table(target: str | os.PathLike[str], frame: pd.DataFrame) -> None:
    """Write a table as Parquet or CSV, chosen by the file suffix."""
    target = Path(target)
    with atomic_path(target) as tmp:
        if target.suffix == ".parquet":
            frame.to_parquet(tmp, index=False)
        elif target.suffix == ".csv":
            frame.to_csv(tmp, index=False)
        else:
            raise ValueError(f"{target}: unsupported table format (use .parquet or .csv)")


def read_table(source: str | os.PathLike[str]) -> pd.DataFrame:
    import pandas as pd

    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such file")
    if source.suffix not in (".parquet", ".csv", ".tsv"):
        raise ValueError(f"{source}: unsupported table format (use .parquet or .csv)")
    try:
        if source.suffix == ".parquet":
            return pd.read_parquet(source)
        return pd.read_csv(source, sep="\t" if source.suffix == ".tsv" else ",", keep_default_na=True)
    except (OSError, ValueError, UnicodeDecodeError) as exc:  # pyarrow/pandas parser errors name no file
        raise ValueError(f"{source}: not a readable {source.suffix[1:]} table ({type(exc).__name__}: {exc})") from exc
