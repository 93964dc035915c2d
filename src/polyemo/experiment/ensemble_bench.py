"""Ensembles inside a bench grid: a grid whose cells are the members, then ensembles of them.

An ensemble recipe is a bench grid file (:mod:`polyemo.experiment.bench`) with one more
top-level key, ``ensembles``::

    name: abhinaya
    base: {...}                         # the members' shared settings (one split for all)
    parts: [{name: S1, set: {...}}, ...]  # one cell per member
    ensembles:
      - name: vote                      # out/ensembles/vote/
        rule: vote
        params: {tiebreak: best-on-validation}
        members: [S1, S2, T1]           # cell ids; default: every cell
      - {name: trios, rule: vote, combinations: 3}   # every 3 of the members, each its own ensemble

:func:`run_ensemble_bench` runs the grid (finished cells are kept), then every ensemble
(:func:`~polyemo.experiment.ensemble.ensemble_runs`), and writes ``ensembles.csv`` /
``ensembles.md``: each member and each ensemble with its interval, and each ensemble's paired
difference against its best member.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from polyemo.experiment.config import ConfigError, format_validation_error, read_yaml
from polyemo.experiment.ensemble import EnsembleResult, ensemble_runs
from polyemo.io import write_table, write_text
from polyemo.numbers import percent


class EnsembleSpec(BaseModel):
    """One ensemble of a recipe (see the module)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    rule: str = "vote"
    params: dict[str, Any] = Field(default_factory=dict)
    members: list[str] | None = None
    #: combine every subset of this many members (each its own ensemble ``<name>.<a>+<b>+...``)
    combinations: int | None = Field(None, ge=2)


@dataclass
class EnsembleBenchResult:
    out_dir: Path
    table: pd.DataFrame
    ensembles: dict[str, EnsembleResult] = field(default_factory=dict)


def split_recipe(source: str | Path | dict[str, Any]) -> tuple[dict[str, Any], list[EnsembleSpec], str]:
    """(the bench grid, its ensembles, a name for errors) of an ensemble recipe."""
    if isinstance(source, dict):
        data, where = copy.deepcopy(source), "recipe"
    else:
        data, where = read_yaml(source), str(source)
        data.setdefault("name", Path(source).stem)
    raw = data.pop("ensembles", None)
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where}: an ensemble recipe needs a non-empty list 'ensembles'")
    try:
        specs = [EnsembleSpec(**item) for item in raw]
    except (ValidationError, TypeError) as error:
        message = format_validation_error(error, where) if isinstance(error, ValidationError) else str(error)
        raise ConfigError(f"{where}: ensembles: {message}") from None
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: ensemble names repeat: {names}")
    return data, specs, where


def expand_ensembles(specs: list[EnsembleSpec], cells: list[str], where: str = "recipe") -> list[tuple[str, EnsembleSpec, list[str]]]:
    """(name, spec, member cell ids) of every ensemble to build."""
    out = []
    for spec in specs:
        members = spec.members or list(cells)
        unknown = sorted(set(members) - set(cells))
        if unknown:
            raise ConfigError(f"{where}: ensemble {spec.name!r}: members {unknown} are not cells ({', '.join(cells)})")
        if spec.combinations is None:
            out.append((spec.name, spec, members))
            continue
        if spec.combinations > len(members):
            raise ConfigError(f"{where}: ensemble {spec.name!r}: combinations of {spec.combinations} from "
                              f"{len(members)} members")
        for subset in itertools.combinations(members, spec.combinations):
            out.append((f"{spec.name}.{'+'.join(subset)}", spec, list(subset)))
    return out


def run_ensemble_bench(source: str | Path | dict[str, Any], out_dir: str | Path | None = None, *,
                       overrides: dict[str, Any] | None = None, progress: bool = True,
                       n_boot: int | None = None) -> EnsembleBenchResult:
    """Run an ensemble recipe (see the module) into ``out_dir`` (default ``runs/<name>``)."""
    from polyemo.experiment.bench import run_bench

    grid, specs, where = split_recipe(source)
    out = Path(out_dir) if out_dir is not None else Path("runs") / str(grid.get("name", "ensemble"))
    bench = run_bench(grid, out, overrides=overrides, progress=progress)
    if bench.errors:
        raise ConfigError(f"{where}: member cells failed, no ensemble built: {bench.errors}")
    cells = list(bench.results)
    plans = expand_ensembles(specs, cells, where)
    results: dict[str, EnsembleResult] = {}
    for name, spec, members in plans:
        runs = [out / "cells" / cell for cell in members]
        results[name] = ensemble_runs(runs, out / "ensembles" / name, rule=spec.rule, params=spec.params,
                                      names=members, name=name, n_boot=n_boot, progress=progress)
    table = ensembles_table(results)
    write_table(out / "ensembles.csv", table)
    write_text(out / "ensembles.md", ensembles_markdown(table, str(grid.get("name", "ensembles"))))
    return EnsembleBenchResult(out, table, results)


def ensembles_table(results: dict[str, EnsembleResult]) -> pd.DataFrame:
    """Every member once and every ensemble, with intervals and the paired comparison."""
    rows: dict[str, dict[str, Any]] = {}
    for name, result in results.items():
        table = result.members
        for record in table[table["kind"] == "member"].to_dict("records"):
            rows.setdefault(record["member"], {"system": record["member"], "members": "", **_scores(record)})
        ensemble = table[table["kind"] != "member"].iloc[0].to_dict()
        paired = result.comparison["paired_bootstrap"]
        rows[name] = {"system": name, "members": " + ".join(table[table["kind"] == "member"]["member"]),
                      "rule": result.result.head.removeprefix("ensemble:"), **_scores(ensemble),
                      "best_member": result.comparison["best_member"], "diff_vs_best": paired.get("diff"),
                      "diff_low": paired.get("diff_low"), "diff_high": paired.get("diff_high"),
                      "paired": paired.get("paired", ""), "mcnemar_p": result.comparison["mcnemar"]["p_value"]}
    return pd.DataFrame(list(rows.values()))


def _scores(record: dict[str, Any]) -> dict[str, Any]:
    keep = ("ua", "ua_low", "ua_high", "pooled_ua", "pooled_ua_low", "pooled_ua_high", "macro_f1", "wa")
    out = {k: record.get(k) for k in keep if k in record}
    out.update({k: v for k, v in record.items() if k.startswith("f1_")})
    return out


def ensembles_markdown(table: pd.DataFrame, title: str) -> str:
    from polyemo.experiment.report import md_table

    def interval(row, key: str) -> str:
        return f"{percent(row[key])} [{percent(row[key + '_low'])}, {percent(row[key + '_high'])}]"

    shown = pd.DataFrame({
        "system": table["system"], "members": table.get("members", ""),
        "UA % (mean of folds)": [interval(r, "ua") for _, r in table.iterrows()],
        "pooled UA %": [interval(r, "pooled_ua") for _, r in table.iterrows()],
        "macro-F1 %": [percent(v) for v in table["macro_f1"]],
        "vs best member (points)": [
            "" if pd.isna(r.get("diff_vs_best")) else
            f"{percent(r['diff_vs_best'])} [{percent(r['diff_low'])}, {percent(r['diff_high'])}] ({r['paired']}; "
            f"McNemar p {r['mcnemar_p']:.2g})" for _, r in table.iterrows()],
    })
    f1_columns = [c for c in table.columns if c.startswith("f1_")]
    f1 = pd.DataFrame({"system": table["system"], **{c[3:]: [percent(v) for v in table[c]] for c in f1_columns}})
    return "\n".join([
        f"# {title}", "",
        "Intervals: 95 % bootstrap (speakers resampled within folds for the mean of folds, within test corpora "
        "pooled). 'vs best member': the ensemble minus its best member (best by test score: a comparison, not a "
        "choice), paired bootstrap of the mean of folds on the same test rows; McNemar's exact test on pooled rows.",
        "", md_table(shown), "", "## Per-class F1 (pooled, %)", "", md_table(f1), ""])
