"""Prediction records out: JSONL/CSV files written resumably, and lines for a terminal.

A run appends each finished record to ``<output>.partial.jsonl`` (flushed and fsynced per
call), and at the end merges earlier and new rows into ``output`` atomically. A rerun reads
both, skips recordings that already have a successful row, and retries failed ones; failures
are rows too (``error`` set), and rows of recordings no longer in the input are kept.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from polyemo.numbers import percent
from polyemo.predict.results import prediction_record

OUTPUT_SUFFIXES = (".jsonl", ".ndjson", ".csv")

__all__ = ["OUTPUT_SUFFIXES", "ResumableOutput", "json_line", "partial_path", "prediction_record", "read_output",
           "readable", "write_output"]


def partial_path(output: Path) -> Path:
    """Where rows are appended while a run is going (merged into ``output`` at the end)."""
    return output.with_name(output.name + ".partial.jsonl")


def json_line(record: dict[str, Any]) -> str:
    """One JSON-lines line (no newline), non-ASCII kept."""
    return json.dumps(record, ensure_ascii=False)


def readable(record: dict[str, Any], top: int = 3) -> str:
    """One line for a person: path, label and the most probable classes (or the error)."""
    if record.get("error"):
        return f"{record['path']}: error: {record['error']}"
    ranked = sorted(record["probabilities"].items(), key=lambda item: -item[1])[:top]
    segments = record.get("segments")
    extra = f", {len(segments)} segments" if isinstance(segments, list) and segments else ""
    return (f"{record['path']}: {record['label']} ("
            + ", ".join(f"{name} {percent(p, 0)}%" for name, p in ranked) + f"{extra})")


def read_output(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows of an earlier output (.jsonl or .csv); a torn last line (a killed run) is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    if path.suffix.lower() == ".csv":
        import pandas as pd

        try:
            table = pd.read_csv(path, dtype={"path": str, "error": str}, keep_default_na=False, on_bad_lines="skip")
        except (pd.errors.EmptyDataError, pd.errors.ParserError):
            return []
        return [{k: (None if v == "" else v) for k, v in row.items()} for row in table.to_dict("records")]
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "path" in row:
            rows.append(row)
    return rows


def _csv_row(record: dict[str, Any], classes: Sequence[str]) -> dict[str, Any]:
    row: dict[str, Any] = {"path": record.get("path"), "label": record.get("label")}
    probabilities = record.get("probabilities") or {}
    if isinstance(probabilities, str):  # already a CSV row
        return record
    for cls in classes:
        row[f"prob_{cls}"] = probabilities.get(cls, record.get(f"prob_{cls}"))
    for dim in ("arousal", "valence", "dominance"):
        row[dim] = record.get(dim)
    row["duration"] = record.get("duration")
    segments = record.get("segments")
    if isinstance(segments, list):
        row["n_segments"] = len(segments)
        row["segments"] = json.dumps(segments)
    else:
        row["n_segments"] = record.get("n_segments")
        row["segments"] = segments
    row["group"] = record.get("group")
    row["norm_source"] = record.get("norm_source")
    for name in ("adaptation", "enrolment"):  # --adapt runs only
        if record.get(name) is not None:
            row[name] = record.get(name)
    row["error"] = record.get("error")
    return row


def write_output(path: str | os.PathLike[str], records: Sequence[dict[str, Any]], classes: Sequence[str]) -> None:
    """Write prediction records atomically: ``.jsonl`` as they are, ``.csv`` flat (prob_<class> columns)."""
    from polyemo.io import atomic_path, write_text

    path = Path(path)
    if path.suffix.lower() == ".csv":
        import pandas as pd

        table = pd.DataFrame([_csv_row(r, classes) for r in records])
        with atomic_path(path) as tmp:
            table.to_csv(tmp, index=False)
    elif path.suffix.lower() in (".jsonl", ".ndjson"):
        write_text(path, "".join(json_line(r) + "\n" for r in records))
    else:
        raise ValueError(f"{path}: unsupported output format (use .jsonl or .csv)")


class ResumableOutput:
    """The rows of one output file across runs: earlier rows, appends as work finishes, the merge.

    ``output`` None keeps rows in memory only (nothing is skipped). ``resume`` False starts
    afresh (an old partial file is removed; the final write replaces ``output``).
    """

    def __init__(self, output: str | os.PathLike[str] | None, resume: bool = True) -> None:
        self.output = Path(output) if output is not None else None
        if self.output is not None and self.output.suffix.lower() not in OUTPUT_SUFFIXES:
            raise ValueError(f"{self.output}: unsupported output format (use .jsonl or .csv)")
        self.previous: dict[str, dict[str, Any]] = {}
        if self.output is not None and resume:
            for row in read_output(self.output) + read_output(partial_path(self.output)):
                self.previous[str(row["path"])] = row
        elif self.output is not None:
            partial_path(self.output).unlink(missing_ok=True)
        self.fresh: dict[str, dict[str, Any]] = {}
        self._partial = None

    @property
    def done(self) -> set[str]:
        """Paths with a successful earlier row (skipped by a rerun)."""
        return {p for p, row in self.previous.items() if not row.get("error")}

    def __enter__(self) -> ResumableOutput:
        if self.output is not None:
            self._partial = open(partial_path(self.output), "a", encoding="utf-8")  # noqa: SIM115
        return self

    def __exit__(self, *exc: object) -> None:
        if self._partial is not None:
            self._partial.close()
            self._partial = None

    def add(self, record: dict[str, Any]) -> None:
        """Keep a finished record (appended to the partial file; see :meth:`flush`)."""
        self.fresh[record["path"]] = record
        if self._partial is not None:
            self._partial.write(json_line(record) + "\n")

    def flush(self) -> None:
        """Make the records added so far durable (the end of a batch of work)."""
        if self._partial is not None:
            self._partial.flush()
            os.fsync(self._partial.fileno())

    def finish(self, paths: Sequence[str], classes: Sequence[str]) -> list[dict[str, Any]]:
        """One row per input path (new rows over earlier ones), then earlier rows of other
        recordings (finished work is never lost); written to ``output``, partial file removed."""
        ordered = []
        seen = set()
        for path in paths:
            record = self.fresh.get(path) or self.previous.get(path)
            if record is not None and path not in seen:
                ordered.append(record)
                seen.add(path)
        ordered += [row for path, row in self.previous.items() if path not in seen]
        if self.output is not None:
            write_output(self.output, ordered, classes)
            partial_path(self.output).unlink(missing_ok=True)
        return ordered
