"""The split data model: folds of utt_ids, saved as JSON plus one CSV per fold.

A :class:`Split` is a list of :class:`Fold` (train / validation / test utt_ids) with the
protocol, its parameters and the seed that made it. On disk (``Split.save(dir)``):

- ``split.json``: everything, with ``sha256`` = SHA-256 of the canonical JSON of the
  rest (sorted keys, no whitespace, UTF-8), checked by :meth:`Split.load`;
- ``<fold name>.csv``: ``utt_id,part`` rows of each fold, for people and spreadsheets;
  they must agree with ``split.json`` or loading fails.

Editing either file by hand makes :meth:`Split.load` raise :class:`SplitIntegrityError`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, Field, ValidationError, field_validator

from polyemo.io import write_json, write_table

PARTS = ("train", "validation", "test")
FORMAT_VERSION = 1
SPLIT_FILE = "split.json"


class SplitError(ValueError):
    """A split cannot be made from this manifest with these parameters."""


class SplitIntegrityError(ValueError):
    """A saved split is missing, malformed or was modified after it was saved."""


class Fold(BaseModel):
    """One train / validation / test partition, as sorted lists of utt_ids."""

    name: str
    train: list[str]
    validation: list[str]
    test: list[str]
    # Zero-shot targets: column -> values that must not occur in train or validation.
    holdout: dict[str, list[str]] = Field(default_factory=dict)
    # Facts about how the fold was made (test speakers, dropped rows, balance rule used).
    info: dict[str, Any] = Field(default_factory=dict)

    @field_validator("train", "validation", "test")
    @classmethod
    def _sorted(cls, ids: list[str]) -> list[str]:
        return sorted(ids)

    def part(self, name: str) -> list[str]:
        if name not in PARTS:
            raise KeyError(f"unknown part {name!r}; parts are {PARTS}")
        return getattr(self, name)

    def parts(self) -> dict[str, list[str]]:
        return {name: self.part(name) for name in PARTS}

    def assignment(self) -> dict[str, str]:
        """utt_id -> part name, for every utt_id of the fold."""
        return {utt: name for name, ids in self.parts().items() for utt in ids}

    def table(self) -> pd.DataFrame:
        """``utt_id, part`` rows, train then validation then test."""
        rows = [(utt, name) for name, ids in self.parts().items() for utt in ids]
        return pd.DataFrame(rows, columns=["utt_id", "part"])


class Split(BaseModel):
    """Folds made by one protocol from one manifest; deterministic given the seed."""

    protocol: str
    params: dict[str, Any] = Field(default_factory=dict)
    seed: int
    label_column: str
    speaker_independent: bool
    manifest_sha256: str
    folds: list[Fold]
    format: int = FORMAT_VERSION

    # --- identity ---------------------------------------------------------------------
    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.canonical_json().encode("utf-8")).hexdigest()

    # --- access -----------------------------------------------------------------------
    def fold(self, name_or_index: str | int) -> Fold:
        if isinstance(name_or_index, int):
            return self.folds[name_or_index]
        for fold in self.folds:
            if fold.name == name_or_index:
                return fold
        raise KeyError(f"no fold {name_or_index!r}; folds are {[f.name for f in self.folds]}")

    def frames(self, manifest: pd.DataFrame, fold: str | int) -> dict[str, pd.DataFrame]:
        """The manifest rows of each part of one fold, in the fold's utt_id order."""
        chosen = self.fold(fold)
        indexed = manifest.set_index("utt_id", drop=False)
        out = {}
        for name, ids in chosen.parts().items():
            missing = [u for u in ids if u not in indexed.index]
            if missing:
                raise SplitError(f"fold {chosen.name}: {len(missing)} {name} utt_ids are not in the manifest, e.g. {missing[:3]}")
            out[name] = indexed.loc[ids].reset_index(drop=True)
        return out

    def summary(self, manifest: pd.DataFrame | None = None) -> pd.DataFrame:
        """One row per fold and part: utterances and (given the manifest) speakers."""
        speaker_of = None if manifest is None else dict(zip(manifest["utt_id"], manifest["speaker"]))
        rows = []
        for fold in self.folds:
            for name, ids in fold.parts().items():
                speakers = None if speaker_of is None else len({speaker_of.get(u) for u in ids} - {None})
                rows.append({"fold": fold.name, "part": name, "utterances": len(ids), "speakers": speakers})
        return pd.DataFrame(rows)

    # --- persistence ------------------------------------------------------------------
    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``split.json`` (with its sha256) and one ``<fold>.csv`` per fold; returns the JSON path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for fold in self.folds:
            write_table(directory / f"{fold.name}.csv", fold.table())
        payload = self.model_dump(mode="json")
        payload["sha256"] = self.sha256
        target = directory / SPLIT_FILE
        # JSON last: a directory with split.json is a finished save.
        write_json(target, payload)
        return target

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> Split:
        """Read a split saved by :meth:`save`, verifying its hash and its fold CSVs."""
        directory = Path(directory)
        path = directory / SPLIT_FILE if directory.is_dir() else directory
        directory = path.parent
        if not path.exists():
            raise SplitIntegrityError(f"{path}: no such file (not a saved split)")
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SplitIntegrityError(f"{path}: not readable JSON ({exc})") from exc
        if not isinstance(payload, dict) or "sha256" not in payload:
            raise SplitIntegrityError(f"{path}: no 'sha256' field (not a split saved by polyemo)")
        stored = payload.pop("sha256")
        try:
            split = cls.model_validate(payload)
        except ValidationError as exc:
            raise SplitIntegrityError(f"{path}: malformed split ({exc.error_count()} errors: {exc.errors()[0]['msg']})") from exc
        if split.format != FORMAT_VERSION:
            raise SplitIntegrityError(f"{path}: split format {split.format}, this polyemo reads format {FORMAT_VERSION}")
        # Hash the payload as written (not the re-validated model), so that any edit counts.
        actual = hashlib.sha256(
            json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        ).hexdigest()
        if actual != stored:
            raise SplitIntegrityError(
                f"{path}: content hash mismatch (stored {stored[:12]}..., computed {actual[:12]}...): "
                "the file was modified after it was saved"
            )
        for fold in split.folds:
            csv_path = directory / f"{fold.name}.csv"
            if not csv_path.exists():
                raise SplitIntegrityError(f"{csv_path}: missing fold table")
            table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
            if list(table.columns) != ["utt_id", "part"]:
                raise SplitIntegrityError(f"{csv_path}: columns {list(table.columns)}, expected ['utt_id', 'part']")
            for name in PARTS:
                in_csv = sorted(table.loc[table["part"] == name, "utt_id"])
                if in_csv != fold.part(name):
                    extra = sorted(set(in_csv) - set(fold.part(name)))[:3]
                    lacking = sorted(set(fold.part(name)) - set(in_csv))[:3]
                    raise SplitIntegrityError(
                        f"{csv_path}: {name} part disagrees with {SPLIT_FILE} "
                        f"(only in CSV: {extra}, only in JSON: {lacking}); the file was modified"
                    )
            unknown_parts = sorted(set(table["part"]) - set(PARTS))
            if unknown_parts:
                raise SplitIntegrityError(f"{csv_path}: unknown parts {unknown_parts}")
        return split


def manifest_sha256(manifest: pd.DataFrame) -> str:
    """Fingerprint of the rows a split refers to: sorted (utt_id, speaker, content_hash)."""
    columns = [c for c in ("utt_id", "speaker", "content_hash") if c in manifest.columns]
    lines = sorted("\t".join(str(v) for v in row) for row in manifest[columns].astype("string").fillna("").itertuples(index=False))
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()
