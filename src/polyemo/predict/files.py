"""Predicting a file, folder or list into an output file: inputs -> engine -> outputs.

:func:`predict_files` is what ``polyemo predict`` runs: :func:`~polyemo.predict.inputs.collect_inputs`
finds the recordings and their groups, the recogniser's ``run`` predicts them a call at a
time, and :class:`~polyemo.predict.outputs.ResumableOutput` keeps the rows.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from polyemo.predict.adapt import BatchAdaptation, enrolled_groups_required, resolve_adapt
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
    #: what test-time adaptation did (``adapt``), for a person
    notes: list[str] = field(default_factory=list)


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
    adapt: str | None = None,
    enrol: int | None = None,
) -> FileRunSummary:
    """Predict every recording of a file, folder or list; one output record per input.

    A recording that cannot be used gets a record with ``error`` set and the run goes on.
    With ``output`` (.jsonl or .csv) records are appended to ``<output>.partial.jsonl`` as
    they finish, and merged into ``output`` atomically at the end; a rerun (``resume``) skips
    inputs that already have a successful record in either. A normalisation group is only
    skipped when all its recordings are done, since its statistics come from all of them.

    ``adapt`` (issue 12; :mod:`polyemo.predict.adapt`): the whole input is one unlabelled
    batch, predicted in one call and never resumed from earlier rows (they came from another
    batch). ``enrolled`` takes speakers from a list's ``speaker`` column or from a folder with
    one sub-folder per speaker (``enrol`` clips each), and fails clearly on anything else.
    """
    from rich.progress import TimeRemainingColumn

    from polyemo.progress import progress_bar

    adaptation = None if resolve_adapt(adapt) is None else BatchAdaptation(str(adapt), enrol)
    notes: list[str] = []
    if adaptation is not None and adaptation.name == "enrolled":
        inputs, speaker_norm = _speaker_inputs(source)
    elif isinstance(source, (str, os.PathLike)):
        inputs, speaker_norm = collect_inputs(source, speaker_norm)
    else:
        inputs, speaker_norm = list(source), speaker_norm or "per-recording"
    if adaptation is not None:
        if getattr(recogniser, "bundle", None) is None:
            raise ValueError(f"--adapt {adaptation.name} adapts one model's head; {recogniser.name} is an ensemble")
        adaptation.check(recogniser.bundle)
        if resume and output is not None and Path(output).exists():
            notes.append(f"--adapt {adaptation.name}: the whole input is one batch, so earlier rows of {output} "
                         "were not reused")
        resume = False
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
    if adaptation is not None:  # one call: the batch is the whole input
        calls = [[f for files in calls for f in files]] if calls else []
    pending = sum(len(c) for c in calls)
    skipped = len(inputs) - pending

    failed = 0
    label = f"predicting ({skipped} done before)" if skipped else "predicting"
    with rows, progress_bar(TimeRemainingColumn(), enabled=show_progress) as bar:
        task = bar.add_task(label, total=pending)
        for files in calls:
            items = [AudioItem(f.path, group=f.group, segment=segment) for f in files]
            extra = {} if adaptation is None else {"adaptation": adaptation}
            for prediction in recogniser.run(items, on_error="record", progress=lambda n: bar.advance(task, n),
                                             **extra):
                record = prediction_record(prediction)
                rows.add(record)
                failed += prediction.error is not None
                if on_record is not None:
                    on_record(record)
            rows.flush()

    ordered = rows.finish([item.path for item in inputs], recogniser.classes)
    notes += adaptation.notes if adaptation is not None else []
    return FileRunSummary(len(inputs), skipped, len(rows.fresh) - failed, failed, speaker_norm, rows.output, ordered,
                          notes)


def _speaker_inputs(source: str | os.PathLike[str] | Sequence[InputFile]) -> tuple[list[InputFile], str]:
    """Recordings with their speakers for ``--adapt enrolled``: a list's ``speaker`` column,
    or a folder whose recordings all sit in one sub-folder per speaker."""
    if not isinstance(source, (str, os.PathLike)):
        inputs = list(source)
        enrolled_groups_required([f.path for f in inputs], [f.group for f in inputs], "the inputs")
        return inputs, "column"
    path = Path(source)
    if path.is_dir():
        inputs, _ = collect_inputs(path, "per-folder")
        loose = [f.path for f in inputs if Path(f.path).parent == path]
        if loose:
            raise ValueError(f"{path}: --adapt enrolled needs one sub-folder per speaker, but {len(loose)} "
                             f"recordings sit in the folder itself (e.g. {Path(loose[0]).name})")
        return [InputFile(f.path, f"speaker:{Path(f.path).parent.relative_to(path)}") for f in inputs], "per-folder"
    inputs, mode = collect_inputs(path)
    if mode != "column" or any(f.group is not None and not f.group.startswith("speaker:") for f in inputs):
        raise ValueError(f"{path}: --adapt enrolled needs speakers: a list (.csv/.tsv/.parquet) with a 'speaker' "
                         "column, or a folder with one sub-folder per speaker")
    return inputs, "column"
