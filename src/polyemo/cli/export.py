"""``polyemo export``: a finished run's final model as a bundle (see :func:`polyemo.experiment.export.export_run`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from polyemo.cli.app import app


@app.command()
def export(
    run: Path = typer.Argument(..., help="run folder (polyemo run) or benchmark folder (polyemo bench) "
                               "whose experiment set 'final_model'"),
    bundle: Path = typer.Argument(..., help="bundle folder to write"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing bundle (atomically)"),
    name: Optional[str] = typer.Option(None, help="model name (default: final_model.name, else the experiment's)"),
) -> None:
    """Write the final model of RUN, with its scores and model card, as a bundle at BUNDLE."""
    from rich.console import Console
    from rich.markup import escape

    from polyemo.bundle import BundleError, read_bundle
    from polyemo.experiment.export import ExportError, export_run

    err = Console(stderr=True, soft_wrap=True)
    try:
        path = export_run(run, bundle, overwrite=overwrite, name=name)
    except FileExistsError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))} (use --overwrite)")
        raise typer.Exit(2) from None
    except (ExportError, FileNotFoundError, TypeError, ValueError, BundleError) as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    exported = read_bundle(path)  # verifies what was written
    size = sum(p.stat().st_size for p in path.iterdir() if p.is_file())
    err.print(f"[green]bundle {escape(str(path))}[/green]: {exported.name}, classes {', '.join(exported.labels.classes)}, "
              f"{size / 1024:.0f} KiB")
    for metric, value in exported.config.card.scores.items():
        err.print(f"  {metric}: {100 * value:.1f}%")
