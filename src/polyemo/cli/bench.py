"""``polyemo bench``: a grid of experiments from one YAML file (see :func:`polyemo.experiment.run_bench`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from polyemo.cli.app import app
from polyemo.cli.run import ENCODER_HELP, EPOCHS_HELP, LIMIT_HELP, SET_HELP, experiment_overrides


@app.command()
def bench(
    grid: Path = typer.Argument(..., exists=True, dir_okay=False, help="grid YAML file"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", file_okay=False, help="bench folder (default runs/<name>)"),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help=LIMIT_HELP),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help=EPOCHS_HELP),
    encoder: Optional[str] = typer.Option(None, "--encoder", help=ENCODER_HELP),
    corpora_root: Optional[Path] = typer.Option(None, "--corpora-root", file_okay=False, help="folder holding <corpus>/ subfolders"),
    setting: list[str] = typer.Option([], "--set", help=SET_HELP),
    only: list[str] = typer.Option([], "--only", help="run only this cell id (repeatable)"),
    list_cells: bool = typer.Option(False, "--list", help="list the cells and exit"),
    fail_fast: bool = typer.Option(False, "--fail-fast", help="stop at the first failing cell"),
    progress: bool = typer.Option(True, help="show progress bars"),
    ray: Optional[str] = typer.Option(None, "--ray", help="run cells as Ray tasks: a cluster address (auto, "
                                      "ray://host:10001) or 'local'; output and cache folders must be on paths every "
                                      "node sees (pip install 'polyemo[ray]')"),
) -> None:
    """Run every cell of GRID (finished cells are skipped); write the leaderboard and heatmaps."""
    from rich.console import Console
    from rich.markup import escape

    from polyemo.experiment import ConfigError, load_bench, run_bench

    console = Console(stderr=True)
    overrides = experiment_overrides(limit, epochs, encoder, corpora_root, setting)
    try:
        if list_cells:
            _, cells = load_bench(grid, overrides)
            for cell in cells:
                typer.echo(cell.id)
            return
        result = run_bench(grid, output, overrides=overrides, progress=progress, fail_fast=fail_fast, only=only or None,
                           ray=ray)
    except ConfigError as error:
        console.print(f"[red]error:[/red] {escape(str(error))}")
        raise typer.Exit(2) from None
    console.print((result.out_dir / "leaderboard.md").read_text(encoding="utf-8"))
    for path in result.heatmaps:
        console.print(f"heatmap: {path}")
    if result.errors:
        console.print(f"[yellow]{len(result.errors)} cell(s) failed[/yellow]: {', '.join(result.errors)}")
        raise typer.Exit(1)
