"""``polyemo ensemble``: combine finished runs (:func:`polyemo.experiment.ensemble.ensemble_runs`),
or run an ensemble recipe (:func:`polyemo.experiment.ensemble_bench.run_ensemble_bench`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from polyemo.cli._options import parse_key_values
from polyemo.cli.app import app
from polyemo.cli.run import ENCODER_HELP, EPOCHS_HELP, LIMIT_HELP, SET_HELP, experiment_overrides


@app.command()
def ensemble(
    sources: list[Path] = typer.Argument(..., exists=True, help="finished run folders (same split), or one ensemble recipe YAML"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", file_okay=False, help="output folder"),
    rule: str = typer.Option("vote", "--rule", help="vote, mean, weighted or stacking (polyemo.ensemble.RULES)"),
    tiebreak: Optional[str] = typer.Option(None, "--tiebreak",
                                           help="vote ties: best-on-validation (default), confidence, or a member name"),
    param: list[str] = typer.Option([], "--param", help="a rule parameter KEY=VALUE, e.g. C=0.5 (repeatable)"),
    names: list[str] = typer.Option([], "--name", help="member names, one per run in order (default: the runs' names)"),
    title: Optional[str] = typer.Option(None, "--title", help="the ensemble's name"),
    n_boot: Optional[int] = typer.Option(None, "--n-boot", min=0, help="bootstrap resamples (default: the first member's)"),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help=f"recipe: {LIMIT_HELP}"),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help=f"recipe: {EPOCHS_HELP}"),
    encoder: Optional[str] = typer.Option(None, "--encoder", help=f"recipe: {ENCODER_HELP}"),
    corpora_root: Optional[Path] = typer.Option(None, "--corpora-root", file_okay=False, help="recipe: corpora folder"),
    setting: list[str] = typer.Option([], "--set", help=f"recipe: {SET_HELP}"),
    progress: bool = typer.Option(True, help="show progress bars"),
) -> None:
    """Combine RUNS fold by fold (rules fitted on each fold's validation predictions), score
    them like a run and compare with the best member; or run an ensemble RECIPE."""
    from rich.console import Console
    from rich.markup import escape

    from polyemo.experiment import ConfigError, ExperimentError

    console = Console(stderr=True)
    try:
        if len(sources) == 1 and sources[0].is_file():
            from polyemo.experiment.ensemble_bench import run_ensemble_bench

            overrides = experiment_overrides(limit, epochs, encoder, corpora_root, setting)
            done = run_ensemble_bench(sources[0], output, overrides=overrides, progress=progress, n_boot=n_boot)
            console.print((done.out_dir / "ensembles.md").read_text(encoding="utf-8"))
            return
        from polyemo.experiment.ensemble import ensemble_runs

        if output is None:
            raise typer.BadParameter("give the output folder (-o OUT)")
        params = parse_key_values(param, "KEY=VALUE (e.g. C=0.5)")
        if tiebreak is not None:
            params["tiebreak"] = tiebreak
        result = ensemble_runs(list(sources), output, rule=rule, params=params, names=names or None, name=title,
                               n_boot=n_boot, progress=progress)
    except (ConfigError, ExperimentError) as error:
        console.print(f"[red]error:[/red] {escape(str(error))}")
        raise typer.Exit(2) from None
    comparison = result.comparison
    paired = comparison["paired_bootstrap"]
    console.print(f"{result.result.name}: {escape(result.result.headline)}")
    if "diff" in paired:
        console.print(f"vs best member {comparison['best_member']}: {100 * paired['diff']:+.1f} points "
                      f"[{100 * paired['diff_low']:+.1f}, {100 * paired['diff_high']:+.1f}] ({paired['paired']}); "
                      f"McNemar p = {comparison['mcnemar']['p_value']:.3g}")
    console.print(f"report: {result.out_dir / 'report.md'}")
