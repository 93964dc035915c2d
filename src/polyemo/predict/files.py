"""Predicting a file, folder or list into an output file: inputs -> engine -> outputs.

:func:`predict_files` is what ``polyemo predict`` runs: :func:`~polyemo.predict.inputs.collect_inputs`
finds the recordings and their groups, the recogniser's ``run`` predicts them a call at a
time, and :class:`~polyemo.predict.outputs.ResumableOutput` keeps the rows.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from polyemo.predict.inputs import AudioItem, InputFile, SpeakerNorm, collect_inputs
from polyemo.predict.outputs import ResumableOutput
from polyemo.predict.results import prediction_record

if TYPE_CHECKING:
    from polyemo.predict.engine import Recogniser


@dataclass
class FileRunSummary:
    """What :func:`predict_files` did."""

    inputs: int
    skipped: int
    predicted: int
    failed: int
    speaker_norm: str
    output: Path | None
    records: list[dict[str, Any]]


def predict_files(
    recogniser: Recogniser,
    source: str | os.PathLike[str] | Sequence[InputFile],
    output: str | os.PathLike[str] | None = None,
    *,
    speaker_norm: SpeakerNorm | None = None,
    segment: bool | None = None,
    resume: bool = True,
    files_per_call: int = 32,
    show_progress: bool = True,
    on_record: Callable[[dict[str, Any]], None] | None = None,
) -> FileRunSummary:
    """Predict every recording of a file, folder or list; one output record per input.

    A recording that cannot be used gets a record with ``error`` set and the run goes on.
    With ``output`` (.jsonl or .csv) records are appended to ``<output>.partial.jsonl`` as
    they finish, and merged into ``output`` atomically at the end; a rerun (``resume``) skips
    inputs that already have a successful record in either. A normalisation group is only
    skipped when all its recordings are done, since its statistics come from all of them.
    """
    from rich.progress import TimeRemainingColumn

    from polyemo.progress import progress_bar

    if isinstance(source, (str, os.PathLike)):
        inputs, speaker_norm = collect_inputs(source, speaker_norm)
    else:
        inputs, speaker_norm = list(source), speaker_norm or "per-recording"
    rows = ResumableOutput(output, resume)
    done = rows.done

    # Work units: a whole group, or chunks of ungrouped recordings.
    grouped: dict[str, list[InputFile]] = {}
    loose: list[InputFile] = []
    for item in inputs:
        (grouped.setdefault(item.group, []) if item.group is not None else loose).append(item)
    calls = [files for files in grouped.values() if not all(f.path in done for f in files)]
    todo_loose = [f for f in loose if f.path not in done]
    calls += [todo_loose[i:i + files_per_call] for i in range(0, len(todo_loose), files_per_call)]
    pending = sum(len(c) for c in calls)
    skipped = len(inputs) - pending

    failed = 0
    label = f"predicting ({skipped} done before)" if skipped else "predicting"
    with rows, progress_bar(TimeRemainingColumn(), enabled=show_progress) as bar:
        task = bar.add_task(label, total=pending)
        for files in calls:
            items = [AudioItem(f.path, group=f.group, segment=segment) for f in files]
            for prediction in recogniser.run(items, on_error="record", progress=lambda n: bar.advance(task, n)):
                record = prediction_record(prediction)
                rows.add(record)
                failed += prediction.error is not None
                if on_record is not None:
                    on_record(record)
            rows.flush()

    ordered = rows.finish([item.path for item in inputs], recogniser.classes)
    return FileRunSummary(len(inputs), skipped, len(rows.fresh) - failed, failed, speaker_norm, rows.output, ordered)
