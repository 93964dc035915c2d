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


def export_ensemble(ensemble_dir: Path, target: Path, bundles: dict[str, Path] | None = None, *,
                    overwrite: bool = False, name: str | None = None) -> Path:
    """An ensemble bundle from a finished ensemble folder: each member's bundle (given in
    ``bundles``, else exported from its run's final model, which needs ``final_model`` in the
    member's experiment) and the rule fitted on every fold's validation predictions pooled
    (:func:`polyemo.experiment.ensemble.deployment_rule`). Lives here because it joins the
    experiment stage (runs) and the bundle stage (bundle files), which only the CLI imports both of."""
    import tempfile

    from polyemo.bundle import export_ensemble_bundle
    from polyemo.experiment.ensemble import deployment_rule
    from polyemo.experiment.export import export_run

    deploy = deployment_rule(ensemble_dir)
    given = dict(bundles or {})
    unknown = sorted(set(given) - {m["name"] for m in deploy["members"]})
    if unknown:
        raise ValueError(f"bundles given for {unknown}, which are not members ({[m['name'] for m in deploy['members']]})")
    with tempfile.TemporaryDirectory(prefix=".ensemble-members-", dir=Path(target).resolve().parent) as tmp:
        for member in deploy["members"]:
            if member["name"] not in given:
                given[member["name"]] = export_run(member["run"], Path(tmp) / member["name"])
        return export_ensemble_bundle(
            target, given, deploy["rule"], name=name or deploy["name"], scores=deploy["scores"],
            member_scores=deploy["member_scores"], overwrite=overwrite,
            description=f"An ensemble ({deploy['rule']['rule']}) of {len(given)} polyemo models, evaluated on "
                        f"protocol {deploy['protocol']}; its rule was fitted on the members' validation predictions.",
            info={"protocol": deploy["protocol"], "source": str(Path(ensemble_dir).resolve())})


@app.command("ensemble-export")
def ensemble_export(
    ensemble_dir: Path = typer.Argument(..., exists=True, file_okay=False, help="a finished ensemble folder"),
    bundle: Path = typer.Argument(..., help="ensemble bundle folder to write"),
    member: list[str] = typer.Option([], "--member", help="NAME=BUNDLE: an existing bundle of a member (repeatable)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing bundle (atomically)"),
    name: Optional[str] = typer.Option(None, help="model name (default: the ensemble's)"),
) -> None:
    """Write ENSEMBLE_DIR's members and rule as one ensemble bundle (polyemo predict / serve / polyemo.load use it)."""
    from rich.console import Console
    from rich.markup import escape

    from polyemo.bundle import BundleError, read_ensemble_bundle
    from polyemo.experiment import ExperimentError

    err = Console(stderr=True, soft_wrap=True)
    pairs = {k: Path(v) for k, v in parse_key_values(member, "NAME=BUNDLE").items()}
    try:
        path = export_ensemble(ensemble_dir, bundle, pairs, overwrite=overwrite, name=name)
    except (ExperimentError, FileExistsError, FileNotFoundError, TypeError, ValueError, BundleError) as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    written = read_ensemble_bundle(path)
    err.print(f"[green]ensemble bundle {escape(str(path))}[/green]: {written.name}, rule {written.rule['rule']}, "
              f"members {', '.join(written.members)}")
