"""``polyemo transcribe``: ASR transcripts into a manifest (see :func:`polyemo.encoders.asr.transcribe_manifest`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from polyemo.cli.app import app


@app.command()
def transcribe(
    manifest: Path = typer.Argument(..., exists=True, dir_okay=False, help="manifest (.parquet or .csv)"),
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", help="manifest to write (X.parquet, X.csv beside it); default: MANIFEST itself"),
    model: str = typer.Option("whisper-base", "--model", "-m",
                              help="ASR model: whisper-base (packaged offline), a hub id or a local transformers folder"),
    language: str = typer.Option("manifest", help="manifest (each row's language), detect, or an ISO code such as de"),
    beams: int = typer.Option(1, min=1, help="1: greedy decoding; >1: beam search"),
    all_rows: bool = typer.Option(False, "--all", help="transcribe every row (default: only rows without text)"),
    batch_size: int = typer.Option(8, min=1, help="clips per decoding batch"),
    store: Optional[Path] = typer.Option(None, help="transcript store (default: the user cache's transcripts.sqlite)"),
    progress: bool = typer.Option(True, help="show a progress bar"),
) -> None:
    """Fill MANIFEST's ``transcript`` column with ASR output and its ``text`` where missing."""
    from rich.console import Console

    from polyemo import manifest as mf
    from polyemo.encoders.asr import TranscribeError, transcribe_manifest
    from polyemo.encoders.hf import ModelNotFoundError

    console = Console(stderr=True, soft_wrap=True)
    try:
        result = transcribe_manifest(manifest, model, rows="all" if all_rows else "missing", language=language,
                                     beams=beams, batch_size=batch_size, store=store, progress=progress)
    except (TranscribeError, ModelNotFoundError, ValueError, mf.ManifestError) as error:
        console.print(f"[red]error:[/red] {error}", highlight=False)
        raise typer.Exit(1) from None
    paths = mf.save(result.manifest, output or manifest)
    console.print(result.summary())
    console.print(f"manifest: {paths[0]} (+ .csv)")
    for utt_id, _, error in result.failures.itertuples(index=False):
        console.print(f"  [yellow]{utt_id}[/yellow]: {error}")
    if len(result.failures) and result.n_computed + result.n_cached == 0:
        raise typer.Exit(1)
