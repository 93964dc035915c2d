"""Corpus commands: ``polyemo prepare``, ``prepare-all``, ``stats``, ``corpora``.

Thin layers over :func:`polyemo.corpora.prepare`, :func:`polyemo.corpora.prepare_all`
and :func:`polyemo.stats.corpus_stats`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from polyemo.cli._options import parse_key_values
from polyemo.cli.app import app




def _fail(message: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(1)


@app.command()
def prepare(
    corpus: str = typer.Argument(..., help="recipe name (see `polyemo corpora`), e.g. emodb, ravdess, folder, table"),
    root: Path = typer.Argument(..., exists=True, help="the corpus folder as downloaded (for `table`: the table file)"),
    output: Path = typer.Option(..., "--output", "-o", help="manifest to write: X.parquet (X.csv is written beside it)"),
    workers: int = typer.Option(1, min=1, help="processes that decode and hash the audio"),
    option: list[str] = typer.Option([], "--option", help="recipe option KEY=VALUE, e.g. language=de, speaker_pattern='^(\\w+)_' (repeatable)"),
    progress: bool = typer.Option(True, help="show a progress bar"),
) -> None:
    """Build the manifest of one corpus: recipe rows, durations, content hashes.

    Files that cannot be decoded are left out and listed in X.failures.csv.
    """
    from rich.console import Console

    from polyemo import manifest as mf
    from polyemo.corpora import prepare as prepare_corpus
    from polyemo.corpora.base import RecipeError
    from polyemo.io import write_table

    try:
        manifest, failures = prepare_corpus(corpus, root, workers=workers, show_progress=progress, **parse_key_values(option))
    except (KeyError, RecipeError, TypeError) as exc:
        _fail(str(exc).strip('"'))
    paths = mf.save(manifest, output)
    failure_path = paths[0].with_suffix("").with_suffix(".failures.csv")
    write_table(failure_path, failures)
    console = Console()
    console.print(f"{len(manifest)} files -> {paths[0]} (+ .csv); {len(failures)} failures" + (f" -> {failure_path}" if len(failures) else ""))


@app.command("prepare-all")
def prepare_all(
    root: Path = typer.Argument(..., exists=True, file_okay=False, help="folder whose subfolders are corpora named after their recipes (emodb/, ravdess/, ...)"),
    output: Path = typer.Option(..., "--output", "-o", help="output folder for <corpus>.parquet/.csv, all.parquet/.csv, failures.csv"),
    workers: int = typer.Option(1, min=1, help="processes that decode and hash the audio"),
    force: bool = typer.Option(False, "--force", help="prepare again even where a manifest is newer than its corpus"),
    progress: bool = typer.Option(True, help="show progress bars"),
) -> None:
    """Prepare every known corpus below ROOT (resumable: up-to-date manifests are kept)."""
    from rich.console import Console
    from rich.table import Table

    from polyemo.corpora import prepare_all as run

    summary = run(root, output, force=force, workers=workers, show_progress=progress)
    table = Table("corpus", "status", "files", "failures", "seconds", title=f"prepare-all {root} -> {output}")
    for row in summary.itertuples(index=False):
        table.add_row(row.corpus, row.status, str(row.files), str(row.failures), f"{row.seconds:.1f}")
    Console().print(table)
    if (summary["status"] == "failed").any():
        raise typer.Exit(1)


@app.command()
def stats(
    manifest: Path = typer.Argument(..., exists=True, dir_okay=False, help="manifest (.parquet or .csv)"),
    png: Optional[Path] = typer.Option(None, "--png", help="also save a bar chart of label counts here"),
) -> None:
    """Files, hours, speakers and label counts per corpus and language."""
    from rich.console import Console
    from rich.table import Table

    from polyemo import manifest as mf
    from polyemo.stats import BASE_COLUMNS, corpus_stats, plot_label_counts

    frame = mf.load(manifest)
    table_frame = corpus_stats(frame)
    count_columns = [c for c in table_frame.columns if c not in BASE_COLUMNS]
    table = Table(title=f"{manifest} ({len(frame)} files)")
    for name in ("corpus", "language"):
        table.add_column(name)
    for name in ("files", "hours", "speakers"):
        table.add_column(name, justify="right")
    table.add_column("labels (files per label; arousal_* = arousal level, no category)", overflow="fold")
    for row in table_frame.to_dict("records"):
        counts = ", ".join(f"{c} {row[c]}" for c in count_columns if row[c])
        if row["unlabelled"] and not any(row[c] for c in count_columns if c.startswith("arousal_")):
            counts += f", no label {row['unlabelled']}"
        table.add_row(row["corpus"], row["language"], str(row["files"]), f"{row['hours']:.2f}", str(row["speakers"]),
                      counts, end_section=row["corpus"] == "all" or None)
    Console().print(table)
    if png is not None:
        Console().print(f"label chart -> {plot_label_counts(frame, png)}")


@app.command()
def corpora() -> None:
    """List the corpus recipes."""
    import inspect

    from rich.console import Console
    from rich.table import Table

    from polyemo.corpora import RECIPES

    table = Table("recipe", "language", "description")
    for name in RECIPES.names():
        recipe = RECIPES.get(name)
        doc = inspect.getmodule(recipe).__doc__ or ""
        table.add_row(name, recipe.language or "per file/option", doc.strip().splitlines()[0] if doc.strip() else "")
    Console().print(table)
