"""``polyemo split``: make evaluation folds for a manifest (see :func:`polyemo.splits.make_split`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from polyemo.cli._options import parse_key_values
from polyemo.cli.app import app




def _one_or_list(values: list[str]) -> str | list[str]:
    return values[0] if len(values) == 1 else values


@app.command()
def split(
    manifests: list[Path] = typer.Argument(..., exists=True, dir_okay=False, help="one or more manifests (.parquet or .csv)"),
    output: Path = typer.Option(..., "--output", "-o", file_okay=False, help="folder for split.json and the fold CSVs"),
    protocol: str = typer.Option("emobox", "--protocol", "-p", help="emobox (= emobox_official: EmoBox's published folds), emobox_coverage / emobox_rule (EmoBox's fold rule), loso, speaker_kfold, official, leave_one_corpus_out, leave_one_language_out, cross_corpus"),
    seed: int = typer.Option(0, help="random seed; the same seed gives the same split"),
    label_column: str = typer.Option("label", help="target column, e.g. label or arousal_level (baved)"),
    validation_fraction: Optional[float] = typer.Option(None, help="share of training speakers held out for validation (default 0.2)"),
    target: list[str] = typer.Option([], "--target", help="zero-shot target language/corpus (repeatable; default: each in turn)"),
    train: list[str] = typer.Option([], "--train", help="cross_corpus: training corpus (repeatable)"),
    test: list[str] = typer.Option([], "--test", help="cross_corpus: test corpus (repeatable)"),
    corpus: Optional[str] = typer.Option(None, help="use only this corpus of the manifest"),
    k: Optional[int] = typer.Option(None, "--k", help="speaker_kfold: number of folds"),
    param: list[str] = typer.Option([], "--param", help="further protocol parameter KEY=VALUE (repeatable)"),
) -> None:
    """Make the folds of PROTOCOL over MANIFESTS, check them for leakage and save them."""
    from rich.console import Console
    from rich.table import Table

    from polyemo import manifest as mf
    from polyemo.splits import LeakageError, SplitError, check_leakage, documented_properties, make_split

    console = Console()
    try:
        frame = mf.concat([mf.load(path) for path in manifests]) if len(manifests) > 1 else mf.load(manifests[0])
    except (mf.ManifestError, ValueError, OSError) as exc:
        console.print(f"[red]cannot read the manifest:[/red] {exc}")
        raise typer.Exit(2) from None
    params = parse_key_values(param)
    for key, value in (("validation_fraction", validation_fraction), ("corpus", corpus), ("k", k)):
        if value is not None:
            params[key] = value
    for key, values in (("target", target), ("train", train), ("test", test)):
        if values:
            params[key] = _one_or_list(values)
    try:
        result = make_split(frame, protocol=protocol, label_column=label_column, seed=seed, **params)
    except LeakageError as exc:
        console.print(f"[red]the split leaks; nothing saved[/red]\n{exc}")
        raise typer.Exit(1) from None
    except (SplitError, KeyError) as exc:
        console.print(f"[red]cannot make the split:[/red] {exc}")
        raise typer.Exit(2) from None

    summary = result.summary(frame)
    table = Table(title=f"{result.protocol} split, seed {result.seed}, {len(result.folds)} folds (speakers / utterances)")
    table.add_column("fold", no_wrap=True)
    for part in ("train", "validation", "test"):
        table.add_column(part, justify="right", no_wrap=True)
    for fold_name, rows in summary.groupby("fold", sort=False):
        table.add_row(fold_name, *[f"{row.speakers} / {row.utterances}" for row in rows.itertuples()])
    console.print(table)

    problems = check_leakage(frame, result)
    if problems:  # make_split already refuses leaking splits; this guards the saved copy.
        console.print("[red]leakage check failed; nothing saved[/red]")
        for problem in problems:
            console.print(f"  - {problem}")
        raise typer.Exit(1)
    checks = "utt_id, speaker, content-hash" if result.speaker_independent else "utt_id, content-hash (speaker-dependent split)"
    console.print(f"[green]leakage check passed[/green] ({checks}, zero-shot targets, empty parts)")
    for note in documented_properties(frame, result):  # a published partition, scored as published
        console.print(f"  note: {note}")
    path = result.save(output)
    console.print(f"saved {path} (sha256 {result.sha256[:12]}) and {len(result.folds)} fold CSVs")
