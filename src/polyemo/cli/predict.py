"""``polyemo predict``: emotions of files, folders or lists (see :func:`polyemo.predict.predict_files`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from polyemo.cli.app import app


@app.command()
def predict(
    source: Path = typer.Argument(..., help="an audio file, a folder (searched recursively), or a list "
                                  "(.csv/.tsv/.parquet with 'path' and optional 'speaker' or 'group' columns, or .txt)"),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="model bundle folder (default: the packaged model)"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="write .jsonl or .csv (default: print to stdout)"),
    output_format: str = typer.Option("auto", "--format", help="stdout without -o: text (label and top "
                                      "probabilities), jsonl, or auto (text on a terminal, else jsonl)"),
    speaker_norm: Optional[str] = typer.Option(
        None, "--speaker-norm", help="normalisation groups for speaker-normalised models: per-recording, "
        "per-folder, or column (the list's speaker/group column; the default when it has one)"),
    segment: Optional[bool] = typer.Option(
        None, "--segment/--no-segment", help="split recordings at pauses (Silero VAD) and predict each "
        "segment; default: only recordings longer than the model's threshold"),
    timeline: Optional[Path] = typer.Option(None, help="plot the segment timeline to this PNG "
                                            "(several segmented recordings: one PNG each, numbered)"),
    resume: bool = typer.Option(True, help="skip inputs already predicted in the output file"),
    batch_size: int = typer.Option(8, min=1, help="recordings (or segments) per encoder batch"),
    precision: str = typer.Option("auto", help="encoder precision: auto (bf16 where the hardware computes it "
                                  "natively, else fp32), fp32, bf16 or int8; the model reads any of them"),
    progress: bool = typer.Option(True, help="show a progress bar"),
    adapt: str = typer.Option(
        "none", "--adapt", help="test-time adaptation, no labels used, the whole input as one batch: none, "
        "prior (EM re-estimation of the class priors), uniform-prior, tent (entropy minimisation of the "
        "normalisation), adabn (the batch's own feature statistics), adabn-tent (those, then tent steps), "
        "enrolled (per-speaker statistics of --enrol clips; speakers from a 'speaker' column "
        "or one sub-folder per speaker)"),
    enrol: Optional[int] = typer.Option(None, "--enrol", min=1, help="--adapt enrolled: enrolment clips per "
                                        "speaker (default: the bundle's, else 5)"),
) -> None:
    """Predict the emotion of every recording in SOURCE: one output row per input.

    Unusable recordings get a row with an 'error' and the run continues. Rows are saved as
    they finish, so an interrupted run resumes where it stopped.
    """
    from rich.console import Console
    from rich.markup import escape

    from polyemo.audio import AudioError
    from polyemo.bundle import BundleError
    from polyemo.predict import load_model, predict_files
    from polyemo.predict.outputs import json_line, readable

    err = Console(stderr=True, soft_wrap=True)
    if output_format not in ("auto", "text", "jsonl"):
        raise typer.BadParameter("use auto, text or jsonl", param_hint="--format")
    if speaker_norm is not None and speaker_norm not in ("per-recording", "per-folder", "column"):
        raise typer.BadParameter("use per-recording, per-folder or column", param_hint="--speaker-norm")
    from polyemo.predict.adapt import ADAPT_CHOICES, resolve_adapt

    try:
        resolve_adapt(adapt)
    except ValueError:
        raise typer.BadParameter(f"use {', '.join(ADAPT_CHOICES)}", param_hint="--adapt") from None
    try:
        recogniser = load_model(model, batch_size=batch_size, precision=precision)
    except BundleError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None

    as_text = output_format == "text" or (output_format == "auto" and sys.stdout.isatty())

    def echo(record: dict) -> None:
        sys.stdout.write((readable(record) if as_text else json_line(record)) + "\n")
        sys.stdout.flush()

    try:
        summary = predict_files(
            recogniser, source, output, speaker_norm=speaker_norm, segment=segment, resume=resume,
            show_progress=progress, on_record=echo if output is None else None, adapt=adapt, enrol=enrol,
        )
    except (FileNotFoundError, ValueError, AudioError) as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None

    if timeline is not None:
        from polyemo.predict.plots import plot_timeline  # matplotlib only when a plot is asked for

        segmented = [r for r in summary.records if r.get("segments") and isinstance(r["segments"], list)]
        if not segmented:
            err.print("[yellow]no segmented recording to plot[/yellow] (use --segment)")
        for index, record in enumerate(segmented):
            target = timeline if len(segmented) == 1 else timeline.with_name(f"{timeline.stem}-{index + 1:03d}{timeline.suffix}")
            plot_timeline(record, target, recogniser.classes)
            err.print(f"timeline of {escape(str(record['path']))} -> {escape(str(target))}")

    for text in summary.notes:
        err.print(f"[yellow]{escape(text)}[/yellow]")
    note = f", {summary.skipped} already done" if summary.skipped else ""
    where = f" -> {summary.output}" if summary.output else ""
    colour = "red" if summary.failed else "green"
    err.print(f"[{colour}]{summary.predicted} predicted, {summary.failed} failed{note}[/{colour}] "
              f"(model {recogniser.name}, normalisation {recogniser.normalisation}, groups {summary.speaker_norm}){escape(where)}")
    if summary.failed:
        for record in summary.records:
            if record.get("error"):
                err.print(f"  [red]failed[/red] {escape(str(record['error']))}")
        raise typer.Exit(1)
