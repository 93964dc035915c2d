"""``polyemo run``: one experiment from a YAML file (see :func:`polyemo.experiment.run_experiment`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from polyemo.cli._options import parse_key_values
from polyemo.cli.app import app


def experiment_overrides(limit: Optional[int], epochs: Optional[int], encoder: Optional[str],
                         corpora_root: Optional[Path], settings: list[str]) -> dict:
    """Dotted-key overrides from the smoke-test options and ``--set KEY=VALUE`` pairs."""
    overrides: dict = {}
    if encoder is not None:
        # A whole new encoder section: the old one's layers may not exist in the new encoder.
        overrides["encoder"] = {"name": encoder}
    if limit is not None:
        overrides["limit"] = {"per_corpus": limit}
    if epochs is not None:
        overrides["training.epochs"] = epochs
    if corpora_root is not None:
        overrides["corpora_root"] = str(corpora_root.resolve())
    # After the options above, so --set can refine them (e.g. encoder.cache_dir=...).
    overrides.update(parse_key_values(settings, "KEY=VALUE (e.g. training.lr=0.01)"))
    return overrides


LIMIT_HELP = "smoke test: at most N utterances per corpus"
EPOCHS_HELP = "override training.epochs"
ENCODER_HELP = "override the encoder (e.g. egemaps for a quick check); its layers reset to all"
SET_HELP = "override any field, KEY=VALUE with dotted keys and JSON values, e.g. head.params.C=[0.1,1] (repeatable)"


@app.command()
def run(
    config: Path = typer.Argument(..., exists=True, dir_okay=False, help="experiment YAML file"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", file_okay=False, help="run folder (default runs/<name>)"),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help=LIMIT_HELP),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help=EPOCHS_HELP),
    encoder: Optional[str] = typer.Option(None, "--encoder", help=ENCODER_HELP),
    corpora_root: Optional[Path] = typer.Option(None, "--corpora-root", file_okay=False, help="folder holding <corpus>/ subfolders"),
    setting: list[str] = typer.Option([], "--set", help=SET_HELP),
    fresh: bool = typer.Option(False, "--fresh", help="remove the folder's previous results first (else finished folds are kept)"),
    progress: bool = typer.Option(True, help="show progress bars"),
    nproc: Optional[int] = typer.Option(None, "--nproc", min=1,
                                        help="fine-tuning: train with DDP over N local processes (gloo on CPU)"),
) -> None:
    """Run the experiment of CONFIG: features, folds, metrics (mean of folds and pooled), report."""
    if nproc is not None:  # read by the finetune estimator; the results equal one process's
        import os

        from polyemo.train.finetune import NPROC_ENV

        os.environ[NPROC_ENV] = str(nproc)
    from rich.console import Console
    from rich.markup import escape

    from polyemo.experiment import ConfigError, ExperimentError, run_experiment

    console = Console(stderr=True)
    try:
        result = run_experiment(config, output, overrides=experiment_overrides(limit, epochs, encoder, corpora_root, setting),
                                progress=progress, fresh=fresh)
    except (ConfigError, ExperimentError) as error:
        console.print(f"[red]error:[/red] {escape(str(error))}")
        raise typer.Exit(2) from None
    # The headline names the classes scored, the protocol, the normalisation and both intervals.
    console.print(f"{result.name}: {escape(result.headline)}; {result.seconds.get('total', 0):.1f} s")
    console.print(f"report: {Path(result.out_dir) / 'report.md'}")
