"""``polyemo extract``: fill the feature cache for a manifest (see :func:`polyemo.cache.features`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from polyemo.cli._options import parse_key_values
from polyemo.cli.app import app


def parse_layers(text: Optional[str]) -> Optional[list[int]]:
    if text is None or not text.strip():
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers such as 0,3,6, got {text!r}") from None




@app.command()
def extract(
    manifest: Path = typer.Argument(..., exists=True, dir_okay=False, help="manifest (.parquet or .csv)"),
    encoder: str = typer.Option(..., "--encoder", "-e", help="encoder name, e.g. whisper-base, egemaps"),
    layers: Optional[str] = typer.Option(
        None, help="comma-separated layers wanted, e.g. 0,3 (default all): the encoder stops after the "
        "deepest (pooled features of every layer it computed are cached); with --frames, the frame layers to store"),
    workers: int = typer.Option(1, min=1, help="extraction processes, each with cores/workers threads"),
    frames: bool = typer.Option(False, "--frames", help="also store frame-level features"),
    frame_dtype: str = typer.Option("float16", help="frame storage type: float16 or float32"),
    precision: Optional[str] = typer.Option(
        None, help="encoder precision: auto (default: bf16 where the CPU/GPU computes it natively, else fp32), fp32, bf16, or int8 (dynamically quantised linear layers) (neural encoders; the cache keeps the precision actually used)"),
    option: list[str] = typer.Option([], "--option", "-o", help="further encoder option KEY=VALUE (repeatable)"),
    cache_dir: Optional[Path] = typer.Option(None, help="feature cache root (default: $POLYEMO_CACHE/features)"),
    failures: Optional[Path] = typer.Option(None, help="write the failures table here (.csv or .parquet)"),
    batch_seconds: float = typer.Option(60.0, min=0.1, help="seconds of audio per encoder batch"),
    progress: bool = typer.Option(True, help="show a progress bar"),
    ray: Optional[str] = typer.Option(
        None, "--ray", help="run batches as Ray tasks: a cluster address (auto, ray://host:10001) or 'local'; "
        "the cache folder must be on a path every node sees (pip install 'polyemo[ray]')"),
) -> None:
    """Compute and cache encoder features for every row of MANIFEST (only what is missing)."""
    from rich.console import Console

    from polyemo.cache import features

    options = parse_key_values(option)
    if precision is not None:
        options["precision"] = precision
    result = features(
        manifest, encoder, layers=parse_layers(layers), kind="frames" if frames else "pooled",
        cache_dir=cache_dir, workers=workers, batch_seconds=batch_seconds, progress=progress,
        encoder_options=options, frame_dtype=frame_dtype, failures_path=failures, ray=ray,
    )
    console = Console(stderr=True, soft_wrap=True)
    console.print(result.summary())
    console.print(f"cache: {result.store_dir}")
    if len(result.failures):
        console.print(f"[yellow]{len(result.failures)} rows failed[/yellow]; table: {result.failures_path}")
        for utt_id, error in list(zip(result.failures["utt_id"], result.failures["error"]))[:5]:
            console.print(f"  {utt_id}: {error}")
    if not result.ok.any() and len(result.ok):
        raise typer.Exit(1)
