"""Your own data as a table (CSV, TSV or Parquet) with one row per audio file.

Columns (names as written here; others are ignored):

- ``path`` (required): the audio file, absolute or relative to the table's folder.
- ``label``: an emotion name or synonym (see :mod:`polyemo.labels`). Required unless
  at least one of ``arousal``/``valence``/``dominance`` is given; a row may then leave
  it empty.
- ``speaker``: without it (or where empty) each file is its own pseudo-speaker
  ``unknown-<row>``, so speaker-independent splits cannot be guaranteed.
- ``language`` (ISO 639-1; else the ``language`` option), ``gender`` (m/f/male/female),
  ``text``, ``arousal``/``valence``/``dominance`` (numbers, your scale), ``split``
  (train/validation/test; dev/val/valid also read as validation).

A missing required column, a missing or unreadable audio file, an unknown label, gender
or split value is a :class:`RecipeError` naming the row (data rows count from 1, the
header is not a row) and the path. All bad rows are reported at once (the first 20).
Options: ``corpus_name`` (the corpus name; default: the table's file name without suffix), ``language``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import soundfile as sf

from polyemo.corpora import RECIPES
from polyemo.corpora.base import Recipe, RecipeError
from polyemo.labels import UnknownLabelError, normalise

DIMENSIONS = ("arousal", "valence", "dominance")
GENDERS = {"m": "m", "male": "m", "man": "m", "f": "f", "female": "f", "woman": "f"}
SPLITS = {"train": "train", "validation": "validation", "valid": "validation", "val": "validation", "dev": "validation",
          "development": "validation", "test": "test"}
MAX_REPORTED = 20


def read_any_table(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        table = pd.read_parquet(path)
    elif suffix in (".csv", ".tsv", ".txt"):
        table = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False)
    else:
        raise RecipeError(f"{path}: not a table (use .csv, .tsv or .parquet)")
    table.columns = [str(c).strip().lower() for c in table.columns]
    return table


def _text(value) -> str | None:
    if value is None or (isinstance(value, float) and pd.isna(value)) or value is pd.NA:
        return None
    value = str(value).strip()
    return value or None


def _key(path: Path, base: Path) -> str:
    """utt_id key: the path without suffix, relative to the table's folder where possible."""
    path = path.resolve().with_suffix("")
    try:
        return path.relative_to(base.resolve()).as_posix()
    except ValueError:
        return path.as_posix().lstrip("/")


@RECIPES.register("table", "csv")
class Table(Recipe):
    name = "table"
    language = ""

    def __init__(self, corpus_name: str | None = None, language: str | None = None) -> None:
        self.corpus = corpus_name
        self.default_language = language

    def scan(self, root: Path) -> pd.DataFrame:
        source = Path(root)
        if not source.is_file():
            raise RecipeError(f"{source}: no such table file")
        self.name = self.corpus or re.sub(r"[^\w.-]", "_", source.stem)
        table = read_any_table(source)
        has_dims = [d for d in DIMENSIONS if d in table.columns]
        missing = [c for c in ("path",) if c not in table.columns]
        if "label" not in table.columns and not has_dims:
            missing.append("label (or arousal/valence/dominance)")
        if missing:
            raise RecipeError(f"{source}: missing required column(s) {missing}; columns found: {list(table.columns)}")

        rows, problems, seen = [], [], {}
        for number, record in enumerate(table.to_dict("records"), start=1):
            try:
                row = self._row(source, number, record, has_dims)
            except RecipeError as exc:
                problems.append(str(exc))
                continue
            if row["path"] in seen:
                problems.append(f"row {number} ({row['path']}): the same file as row {seen[row['path']]}")
                continue
            seen[row["path"]] = number
            rows.append(row)
        if problems:
            shown = "\n  ".join(problems[:MAX_REPORTED])
            more = f"\n  ... and {len(problems) - MAX_REPORTED} more" if len(problems) > MAX_REPORTED else ""
            raise RecipeError(f"{source}: {len(problems)} bad row(s):\n  {shown}{more}")
        return self.frame(rows, source)

    def _row(self, source: Path, number: int, record: dict, has_dims: list[str]) -> dict:
        where = f"row {number}"
        given = _text(record.get("path"))
        if given is None:
            raise RecipeError(f"{where}: empty path")
        path = Path(given).expanduser()
        path = path if path.is_absolute() else source.parent / path
        where = f"row {number} ({path})"
        if not path.is_file():
            raise RecipeError(f"{where}: audio file not found")
        try:
            sf.info(str(path))
        except Exception as exc:  # libsndfile's errors are untyped
            raise RecipeError(f"{where}: unreadable audio ({exc})") from None

        raw = _text(record.get("label"))
        dims = {d: pd.to_numeric(record.get(d), errors="coerce") for d in has_dims}
        for dim, value in dims.items():
            if _text(record.get(dim)) is not None and pd.isna(value):
                raise RecipeError(f"{where}: {dim} {record.get(dim)!r} is not a number")
        label = None
        if raw is not None:
            try:
                label = normalise(raw)
            except UnknownLabelError as exc:
                raise RecipeError(f"{where}: {exc}") from None
        elif all(pd.isna(v) for v in dims.values()):
            raise RecipeError(f"{where}: no label and no arousal/valence/dominance value")

        gender = _text(record.get("gender"))
        if gender is not None:
            if gender.lower() not in GENDERS:
                raise RecipeError(f"{where}: unknown gender {gender!r} (use m/f/male/female or leave empty)")
            gender = GENDERS[gender.lower()]
        split = _text(record.get("split"))
        if split is not None:
            if split.lower() not in SPLITS:
                raise RecipeError(f"{where}: unknown split {split!r} (use train/validation/test)")
            split = SPLITS[split.lower()]
        speaker = _text(record.get("speaker")) or f"unknown-{number}"
        return self.row(
            path, speaker, raw, label, gender=gender, text=_text(record.get("text")),
            language=_text(record.get("language")) or self.default_language,
            official_split=split, utt_key=_key(path, source.parent),
            **{d: (None if pd.isna(v) else float(v)) for d, v in dims.items()},
        )
